/*
 * The KCL MultiLangDaemon for DynamoDB Streams: ddbcdc's shard processors behind the
 * DynamoDB Streams Kinesis Adapter's scheduler.
 *
 * The adapter (com.amazonaws:dynamodb-streams-kinesis-adapter 2.x) builds a KCL 3 scheduler
 * for a DynamoDB stream (StreamsSchedulerFactory) but has no multilang entry point. This one
 * reads the same properties file as software.amazon.kinesis.multilang.MultiLangDaemon, turns
 * it into the KCL configuration exactly as the MultiLangDaemon does, and hands that to the
 * adapter with the multilang record processors (one ddbcdc process per shard) wrapped as the
 * adapter requires. Besides the MultiLangDaemon's properties it reads:
 *
 *   dynamoDBStreamsArn       the stream (arn:aws:dynamodb:REGION:ACCOUNT:table/T/stream/LABEL)
 *   dynamoDBStreamsEndpoint  an endpoint override (emulators), optional
 *
 * Run by `ddbcdc worker` (see ddbcdc.worker.streams), never by hand:
 *
 *   java -cp <kclpy jars>:<adapter jar>:<this class> StreamsDaemon \
 *       --properties-file kcl.properties --log-configuration logback.xml
 *
 * Exit status: 0 after a graceful shutdown or when the scheduler returns, 1 when it failed
 * (a shard processor died, or the configuration is wrong), as the MultiLangDaemon's.
 */

import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.joran.JoranConfigurator;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.model.DynamoDBStreamsProcessRecordsInput;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import com.amazonaws.services.dynamodbv2.streamsadapter.processor.DynamoDBStreamsShardRecordProcessor;
import com.amazonaws.services.dynamodbv2.streamsadapter.util.KinesisMapperUtil;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.Method;
import java.net.URI;
import java.util.ArrayList;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClientBuilder;
import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.MultiLangRecordProcessorFactory;
import software.amazon.kinesis.multilang.config.KinesisClientLibConfigurator;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.RetrievalConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

public final class StreamsDaemon {
    static final String ARN_PROPERTY = "dynamoDBStreamsArn";
    static final String ENDPOINT_PROPERTY = "dynamoDBStreamsEndpoint";

    private static Logger log;

    private StreamsDaemon() {}

    /** A multilang processor as the adapter wants it: records go through unchanged. */
    static final class Processor implements DynamoDBStreamsShardRecordProcessor {
        private final ShardRecordProcessor inner;

        Processor(ShardRecordProcessor inner) {
            this.inner = inner;
        }

        @Override
        public void initialize(InitializationInput input) {
            inner.initialize(input);
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            inner.processRecords(input);
        }

        @Override
        public void processRecords(DynamoDBStreamsProcessRecordsInput input) {
            inner.processRecords(ProcessRecordsInput.builder()
                    .records(new ArrayList<KinesisClientRecord>(input.records()))
                    .checkpointer(input.checkpointer())
                    .cacheEntryTime(input.cacheEntryTime())
                    .cacheExitTime(input.cacheExitTime())
                    .millisBehindLatest(input.millisBehindLatest())
                    .childShards(input.childShards())
                    .isAtShardEnd(input.isAtShardEnd())
                    .build());
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
            inner.leaseLost(input);
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            inner.shardEnded(input);
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            inner.shutdownRequested(input);
        }
    }

    /** The MultiLangDaemon's configurator, with the KCL stream name taken from the ARN. */
    static final class Configurator extends KinesisClientLibConfigurator {
        private final String streamName;

        Configurator(String streamName) {
            this.streamName = streamName;
        }

        @Override
        public MultiLangDaemonConfiguration getConfiguration(Properties properties) {
            // The KCL checks streamArn against the Kinesis ARN pattern; the adapter names the
            // stream REGION$ACCOUNT$TABLE$LABEL and finds the DynamoDB stream ARN from that.
            properties.remove("streamArn");
            properties.setProperty("streamName", streamName);
            return super.getConfiguration(properties);
        }
    }

    static Properties load(String file) throws IOException {
        Properties properties = new Properties();
        try (InputStream in = new FileInputStream(file)) {
            properties.load(in);
        }
        return properties;
    }

    static String required(Properties properties, String name) {
        String value = properties.getProperty(name, "").trim();
        if (value.isEmpty()) {
            throw new IllegalArgumentException(name + " is missing from the properties file");
        }
        return value;
    }

    /** MultiLangDaemonConfiguration.resolvedConfiguration is package-private. */
    static Object resolve(MultiLangDaemonConfiguration configuration, ShardRecordProcessorFactory factory)
            throws ReflectiveOperationException {
        Method method = MultiLangDaemonConfiguration.class.getDeclaredMethod(
                "resolvedConfiguration", ShardRecordProcessorFactory.class);
        method.setAccessible(true);
        return method.invoke(configuration, factory);
    }

    @SuppressWarnings("unchecked")
    static <T> T part(Object resolved, String getter) throws ReflectiveOperationException {
        Method method = resolved.getClass().getDeclaredMethod(getter);
        method.setAccessible(true);
        return (T) method.invoke(resolved);
    }

    static DynamoDbStreamsClient streamsClient(Region region, String endpoint) {
        DynamoDbStreamsClientBuilder builder = DynamoDbStreamsClient.builder()
                .region(region)
                .credentialsProvider(DefaultCredentialsProvider.builder().build());
        if (endpoint != null && !endpoint.isEmpty()) {
            builder.endpointOverride(URI.create(endpoint));
        }
        return builder.build();
    }

    static Scheduler scheduler(MultiLangDaemonConfig config, Properties properties, String arn)
            throws ReflectiveOperationException {
        MultiLangRecordProcessorFactory multilang = config.getRecordProcessorFactory();
        ShardRecordProcessorFactory factory = () -> new Processor(multilang.shardRecordProcessor());
        Object resolved = resolve(config.getMultiLangDaemonConfiguration(), factory);
        RetrievalConfig retrieval = part(resolved, "getRetrievalConfig");
        LeaseManagementConfig lease = part(resolved, "getLeaseManagementConfig");
        PollingConfig polling = (PollingConfig) retrieval.retrievalSpecificConfig();
        DynamoDBStreamsPollingConfig streamsPolling =
                new DynamoDBStreamsPollingConfig(polling.streamName(), polling.kinesisClient());
        streamsPolling.maxRecords(polling.maxRecords());
        streamsPolling.idleTimeBetweenReadsInMillis(polling.idleTimeBetweenReadsInMillis());
        retrieval.retrievalSpecificConfig(streamsPolling);
        // The adapter zeroes the shard sync interval only after it has built the lease
        // management from it: set here, a fresh application's first sync is not a minute late.
        lease.shardSyncIntervalMillis(Math.min(lease.shardSyncIntervalMillis(), 1000L));
        // What the adapter would force anyway (with a warning each start): DynamoDB Streams
        // has no hash-range holes to audit, and a worker with leases skips the first sync.
        lease.leasesRecoveryAuditorInconsistencyConfidenceThreshold(0);
        CoordinatorConfig coordinator = part(resolved, "getCoordinatorConfig");
        coordinator.skipShardSyncAtWorkerInitializationIfLeasesExist(true);
        Region region = Region.of(required(properties, "regionName"));
        return StreamsSchedulerFactory.createScheduler(
                part(resolved, "getCheckpointConfig"),
                coordinator,
                lease,
                part(resolved, "getLifecycleConfig"),
                part(resolved, "getMetricsConfig"),
                part(resolved, "getProcessorConfig"),
                retrieval,
                streamsClient(region, properties.getProperty(ENDPOINT_PROPERTY, "").trim()),
                region);
    }

    static void configureLogging(String file) throws Exception {
        LoggerContext context = (LoggerContext) LoggerFactory.getILoggerFactory();
        context.reset();
        JoranConfigurator configurator = new JoranConfigurator();
        configurator.setContext(context);
        try (InputStream in = new FileInputStream(file)) {
            configurator.doConfigure(in);
        }
    }

    static int run(String propertiesFile) throws Exception {
        Properties properties = load(propertiesFile);
        String arn = required(properties, ARN_PROPERTY);
        if (!KinesisMapperUtil.isValidDynamoDBStreamArn(arn)) {
            throw new IllegalArgumentException(ARN_PROPERTY + " " + arn + " is not a DynamoDB stream ARN");
        }
        String streamName = KinesisMapperUtil.createKinesisStreamIdentifierFromDynamoDBStreamsArn(arn, false);
        MultiLangDaemonConfig config = new MultiLangDaemonConfig(
                propertiesFile, StreamsDaemon.class.getClassLoader(), new Configurator(streamName));
        Scheduler scheduler = scheduler(config, properties, arn);
        long grace = config.getMultiLangDaemonConfiguration().getShutdownGraceMillis();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log.info("Process terminated, will initiate shutdown.");
            try {
                Future<Boolean> done = scheduler.startGracefulShutdown();
                done.get(grace, TimeUnit.MILLISECONDS);
                log.info("Process shutdown is complete.");
            } catch (Exception e) {
                log.error("Encountered an error during shutdown.", e);
            }
        }));
        log.info("Reading DynamoDB stream {} as KCL stream {}", arn, streamName);
        ExecutorService executor = config.getExecutorService();
        Future<Integer> runner = executor.submit(() -> {
            try {
                scheduler.run();
                return 0;
            } catch (Throwable t) {
                log.error("Caught throwable while processing data", t);
                return 1;
            }
        });
        return runner.get();
    }

    public static void main(String[] args) {
        String propertiesFile = null;
        String logConfiguration = null;
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (args[i].equals("--properties-file")) {
                propertiesFile = args[i + 1];
            } else if (args[i].equals("--log-configuration")) {
                logConfiguration = args[i + 1];
            }
        }
        int status = 1;
        try {
            if (propertiesFile == null) {
                throw new IllegalArgumentException("usage: StreamsDaemon --properties-file FILE "
                        + "[--log-configuration logback.xml]");
            }
            if (logConfiguration != null) {
                configureLogging(logConfiguration);
            }
            log = LoggerFactory.getLogger(StreamsDaemon.class);
            status = run(propertiesFile);
        } catch (Throwable t) {
            System.err.println("StreamsDaemon: " + t);
            t.printStackTrace(System.err);
        }
        System.exit(status);
    }
}
