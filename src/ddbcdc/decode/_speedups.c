/*
 * ddbcdc.decode._speedups: the decode hot path in C, an optional accelerator.
 *
 * unmarshal(attribute_map) returns what ddbcdc.decode.attributes.unmarshal returns for a map of
 * plain dicts and lists (as orjson builds them); build(raw, factor, shard_id,
 * sequence_number) returns the fields ddbcdc.decode.record gives a ChangeRecord for a parsed
 * Kinesis-format record; decode(payload, ...) parses raw JSON or canonical base64 of it
 * with orjson and returns the ChangeRecord itself. Each returns None (decode: the parsed
 * payload, once parsed) for anything it does not handle, every error included: the
 * pure-Python code then runs on the same input and decides, so the rules and the error
 * messages live in one place. setup.py builds this when a C compiler is there; without
 * it, ddbcdc runs the same code paths in Python.
 */
#include "_speedups.h"
#include <datetime.h>

static PyObject *
unmarshal(PyObject *module, PyObject *map)
{
    PyObject *out = map_value(map, 0);
    if (out == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE;
    }
    return out;
}

/* ------------------------------------------------------------ decode._build */

#define US_PER_SECOND 1000000LL
#define SECONDS_BELOW 100000000000LL     /* "auto": below this, seconds */
#define MILLIS_BELOW 100000000000000LL   /* below this, milliseconds, else microseconds */
#define MAX_US 253402300799999999LL      /* 9999-12-31T23:59:59.999999Z */

static PyObject *utc = NULL;
static PyObject *str_event_name, *str_event_id, *str_event_source, *str_record_format,
    *str_dynamodb, *str_keys, *str_new_image, *str_old_image, *str_created, *str_size,
    *str_table_name, *str_region, *str_sequence, *str_identity, *str_type, *str_type_cap,
    *str_principal, *str_principal_cap, *str_aws_dynamodb, *str_json, *str_service,
    *str_ttl_principal, *str_insert, *str_modify, *str_remove, *str_source_arn;
static PyObject *field_names[13];
static PyObject *fields_template; /* field name -> None, in field order */

enum { INSERT = 1, MODIFY, REMOVE };

static int
equals(PyObject *value, PyObject *expected)
{
    return PyUnicode_CheckExact(value) && PyUnicode_Compare(value, expected) == 0;
}

/* A value that must be absent, null or exactly `expected`. */
static int
absent_or(PyObject *map, PyObject *key, PyObject *expected)
{
    PyObject *value = PyDict_GetItemWithError(map, key);
    return value == NULL ? !PyErr_Occurred() : value == Py_None || equals(value, expected);
}

static int
non_negative_int(PyObject *value)
{
    int overflow;
    if (!PyLong_CheckExact(value)) {
        return 0;
    }
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    return overflow > 0 || (overflow == 0 && number >= 0);
}

/* ApproximateCreationDateTime as epoch microseconds, or -1 to leave it to Python. */
static long long
created_us(PyObject *value, long long factor)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        return -1;
    }
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || number < 0) {
        return -1;  /* AsLongLong cannot fail otherwise on an exact int */
    }
    if (factor == 0) {
        factor = number < SECONDS_BELOW ? US_PER_SECOND : number < MILLIS_BELOW ? 1000 : 1;
    }
    return number > MAX_US / factor ? -1 : number * factor;
}

/* Epoch microseconds -> aware UTC datetime, by days-to-civil arithmetic (proleptic
 * Gregorian, as datetime uses). */
static PyObject *
utc_datetime(long long micros)
{
    long long seconds = micros / US_PER_SECOND;
    long long days = seconds / 86400;
    long long second_of_day = seconds % 86400;
    long long z = days + 719468;
    long long era = z / 146097;
    long long day_of_era = z - era * 146097;
    long long year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    long long day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    long long mp = (5 * day_of_year + 2) / 153;
    int day = (int)(day_of_year - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(year_of_era + era * 400 + (month <= 2));
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        year, month, day, (int)(second_of_day / 3600), (int)(second_of_day / 60 % 60),
        (int)(second_of_day % 60), (int)(micros % US_PER_SECOND), utc,
        PyDateTimeAPI->DateTimeType);
}

/* Is this a REMOVE by the TTL service? -1: leave it to Python. */
static int
ttl_delete(PyObject *identity, int event)
{
    if (identity == NULL || identity == Py_None) {
        return 0;
    }
    if (!PyDict_CheckExact(identity)) {
        return -1;
    }
    PyObject *kind = PyDict_GetItemWithError(identity, str_type);
    if (kind == NULL && !PyErr_Occurred()) {
        kind = PyDict_GetItemWithError(identity, str_type_cap);
    }
    PyObject *principal = PyDict_GetItemWithError(identity, str_principal);
    if (principal == NULL && !PyErr_Occurred()) {
        principal = PyDict_GetItemWithError(identity, str_principal_cap);
    }
    /* Anything but a str or null there: Python's == decides. */
    if (PyErr_Occurred() || (kind != NULL && kind != Py_None && !PyUnicode_CheckExact(kind))
        || (principal != NULL && principal != Py_None && !PyUnicode_CheckExact(principal))) {
        return -1;
    }
    return event == REMOVE && kind != NULL && principal != NULL && equals(kind, str_service)
           && equals(principal, str_ttl_principal);
}

/* An image, unmarshalled; *out stays NULL when absent, null or empty (the DynamoDB Streams
 * Kinesis Adapter writes {} for an image a change does not have). 0: leave it to Python. */
static int
image(PyObject *dynamodb, PyObject *key, int forbidden, int event, PyObject **out)
{
    PyObject *map = PyDict_GetItemWithError(dynamodb, key);
    *out = NULL;
    if (map == NULL || map == Py_None || (PyDict_CheckExact(map) && PyDict_GET_SIZE(map) == 0)) {
        return !PyErr_Occurred();
    }
    if (event == forbidden) {
        return 0;
    }
    *out = map_value(map, 0);
    return *out != NULL;
}

static int
event_code(PyObject *name)
{
    if (!PyUnicode_CheckExact(name)) {
        return 0;
    }
    return equals(name, str_modify) ? MODIFY : equals(name, str_insert) ? INSERT
         : equals(name, str_remove) ? REMOVE : 0;
}

/* The fields of one ChangeRecord, in field order, or NULL to leave the record to Python. */
static PyObject *
record_fields(PyObject *raw, long long factor, PyObject *shard_id, PyObject *sequence_number)
{
    PyObject *event_name = PyDict_GetItemWithError(raw, str_event_name);
    PyObject *event_id = PyDict_GetItemWithError(raw, str_event_id);
    PyObject *dynamodb = PyDict_GetItemWithError(raw, str_dynamodb);
    PyObject *table = PyDict_GetItemWithError(raw, str_table_name);
    PyObject *region = PyDict_GetItemWithError(raw, str_region);
    int event = event_name == NULL ? 0 : event_code(event_name);
    if (table == NULL && !PyErr_Occurred()
        && PyDict_GetItemWithError(raw, str_source_arn) == NULL && !PyErr_Occurred()) {
        table = Py_None;  /* names no table (the adapter's DynamoDB Streams records) */
    } else if (table == Py_None && !PyErr_Occurred()
               && PyDict_GetItemWithError(raw, str_source_arn) != NULL) {
        table = NULL;  /* a null tableName: the table of eventSourceARN, as Python reads it */
    }
    if (PyErr_Occurred() || !event || event_id == NULL || !PyUnicode_CheckExact(event_id)
        || PyUnicode_GET_LENGTH(event_id) == 0 || !absent_or(raw, str_event_source, str_aws_dynamodb)
        || !absent_or(raw, str_record_format, str_json) || dynamodb == NULL
        || !PyDict_CheckExact(dynamodb) || table == NULL
        || (table != Py_None && !PyUnicode_CheckExact(table))
        || (region != NULL && region != Py_None && !PyUnicode_CheckExact(region))) {
        return NULL;
    }
    PyObject *size = PyDict_GetItemWithError(dynamodb, str_size);
    PyObject *keys_map = PyDict_GetItemWithError(dynamodb, str_keys);
    long long micros = created_us(PyDict_GetItemWithError(dynamodb, str_created), factor);
    int ttl = ttl_delete(PyDict_GetItemWithError(raw, str_identity), event);
    if (PyErr_Occurred() || micros < 0 || ttl < 0 || keys_map == NULL
        || !PyDict_CheckExact(keys_map) || PyDict_GET_SIZE(keys_map) == 0
        || (size != NULL && size != Py_None && !non_negative_int(size))) {
        return NULL;
    }
    if (sequence_number == Py_None) {
        PyObject *own = PyDict_GetItemWithError(dynamodb, str_sequence);
        if (PyErr_Occurred() || (own != NULL && own != Py_None)) {
            return NULL;  /* the DynamoDB Streams format: Python checks and takes it */
        }
    }
    PyObject *values[13] = {NULL};
    PyObject *new_image = NULL, *old_image = NULL, *out = NULL;
    PyObject *keys = map_value(keys_map, 0);
    if (keys == NULL || !image(dynamodb, str_new_image, REMOVE, event, &new_image)
        || !image(dynamodb, str_old_image, INSERT, event, &old_image)) {
        goto done;
    }
    PyObject *created = utc_datetime(micros);
    PyObject *created_int = created == NULL ? NULL : PyLong_FromLongLong(micros);
    if (created_int == NULL) {
        Py_XDECREF(created);
        goto done;
    }
    values[0] = event_id;
    values[1] = event_name;
    values[2] = table;
    values[3] = region == NULL ? Py_None : region;
    values[4] = keys;
    values[5] = new_image == NULL ? Py_None : new_image;
    values[6] = old_image == NULL ? Py_None : old_image;
    values[7] = created;
    values[8] = created_int;
    values[9] = size == NULL ? Py_None : size;
    values[10] = ttl ? Py_True : Py_False;
    values[11] = shard_id;
    values[12] = sequence_number;
    /* A copy of a dict with every key already in place: no resizing while filling it. */
    out = PyDict_Copy(fields_template);
    for (int i = 0; out != NULL && i < 13; i++) {
        if (PyDict_SetItem(out, field_names[i], values[i]) < 0) {
            Py_CLEAR(out);
        }
    }
    Py_DECREF(created);
    Py_DECREF(created_int);
done:
    Py_XDECREF(keys);
    Py_XDECREF(new_image);
    Py_XDECREF(old_image);
    return out;
}

static PyObject *
build(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "build(raw: dict, factor: int, shard_id, sequence_number)");
        return NULL;
    }
    long long factor = PyLong_AsLongLong(args[1]);
    if (factor == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *out = record_fields(args[0], factor, args[2], args[3]);
    if (out == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE;
    }
    return out;
}

/* ------------------------------------------------------------ decode_record */

static PyObject *record_class = NULL; /* ddbcdc.decode.record.ChangeRecord */
static PyObject *fields_set = NULL;   /* the set every record shares */
static PyObject *slots[4] = {NULL};   /* __dict__, fields set, extra, private descriptors */
static PyObject *orjson_loads = NULL;
static PyObject *empty_tuple = NULL;

/* What decode._construct does: a record from validated fields, through the slots. */
static PyObject *
construct(PyObject *fields)
{
    PyObject *record = PyBaseObject_Type.tp_new((PyTypeObject *)record_class, empty_tuple, NULL);
    PyObject *values[4] = {fields, fields_set, Py_None, Py_None};
    for (int i = 0; record != NULL && i < 4; i++) {
        if (Py_TYPE(slots[i])->tp_descr_set(slots[i], record, values[i]) < 0) {
            Py_CLEAR(record);
        }
    }
    return record;
}

/* Raw JSON or canonical base64 of it -> parsed value; NULL without an exception when
 * it is anything else (whitespace, other base64, invalid JSON): decode._parse decides. */
static PyObject *
parse(PyObject *payload)
{
    const unsigned char *data;
    Py_ssize_t length;
    if (PyBytes_CheckExact(payload)) {
        data = (const unsigned char *)PyBytes_AS_STRING(payload);
        length = PyBytes_GET_SIZE(payload);
    }
    else if (PyUnicode_CheckExact(payload) && PyUnicode_IS_ASCII(payload)) {
        data = PyUnicode_1BYTE_DATA(payload);
        length = PyUnicode_GET_LENGTH(payload);
    }
    else {
        return NULL;
    }
    if (length == 0) {
        return NULL;
    }
    PyObject *raw;
    if (data[0] == '{') {
        raw = PyObject_CallOneArg(orjson_loads, payload);
    }
    else {
        PyObject *json = base64_bytes(data, length);
        if (json == NULL) {
            return NULL;
        }
        raw = PyObject_CallOneArg(orjson_loads, json);
        Py_DECREF(json);
    }
    if (raw == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear(); /* orjson.JSONDecodeError */
    }
    return raw;
}

static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "decode(payload, factor: int, shard_id, sequence_number)");
        return NULL;
    }
    if (record_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ddbcdc.decode._speedups.configure() was not called");
        return NULL;
    }
    long long factor = PyLong_AsLongLong(args[1]);
    if (factor == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *raw = parse(args[0]);
    if (raw == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(raw)) {
        return raw;
    }
    PyObject *fields = record_fields(raw, factor, args[2], args[3]);
    if (fields == NULL) {
        if (PyErr_Occurred()) {
            Py_CLEAR(raw);
        }
        return raw; /* parsed, the rest is decode._build's */
    }
    Py_DECREF(raw);
    PyObject *record = construct(fields);
    Py_DECREF(fields);
    return record;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *cls, *shared_fields_set, *descriptors[4];
    if (!PyArg_ParseTuple(args, "O!O!OOOO:configure", &PyType_Type, &cls, &PySet_Type,
                          &shared_fields_set, &descriptors[0], &descriptors[1],
                          &descriptors[2], &descriptors[3])) {
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (Py_TYPE(descriptors[i])->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "configure: every slot needs a data descriptor");
            return NULL;
        }
    }
    if (orjson_loads == NULL) {
        PyObject *orjson = PyImport_ImportModule("orjson");
        orjson_loads = orjson == NULL ? NULL : PyObject_GetAttrString(orjson, "loads");
        Py_XDECREF(orjson);
        if (orjson_loads == NULL) {
            return NULL;
        }
    }
    Py_XSETREF(record_class, Py_NewRef(cls));
    Py_XSETREF(fields_set, Py_NewRef(shared_fields_set));
    for (int i = 0; i < 4; i++) {
        Py_XSETREF(slots[i], Py_NewRef(descriptors[i]));
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"unmarshal", unmarshal, METH_O,
     "unmarshal(attribute_map) -> dict, or None to leave the map to the Python path."},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL,
     "build(raw, factor, shard_id, sequence_number) -> the ChangeRecord fields, or None."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(payload, factor, shard_id, sequence_number) -> a ChangeRecord; the parsed\n"
     "payload when only parsing was done here; None when not even that."},
    {"configure", configure, METH_VARARGS,
     "configure(record_class, fields_set, dict_slot, fields_set_slot, extra_slot,\n"
     "private_slot): how decode() builds records."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ddbcdc.decode._speedups",
    .m_doc = "The decode hot path in C (ddbcdc.decode.attributes and ddbcdc.decode.record decide the rest).",
    .m_size = -1,
    .m_methods = methods,
};

static int
intern_all(void)
{
    static const char *fields[13] = {
        "event_id", "event_name", "table_name", "aws_region", "keys", "new_image",
        "old_image", "approximate_creation", "approximate_creation_us", "size_bytes",
        "is_ttl_delete", "shard_id", "sequence_number"};
    struct { PyObject **slot; const char *text; } strings[] = {
        {&str_event_name, "eventName"}, {&str_event_id, "eventID"},
        {&str_event_source, "eventSource"}, {&str_record_format, "recordFormat"},
        {&str_dynamodb, "dynamodb"}, {&str_keys, "Keys"}, {&str_new_image, "NewImage"},
        {&str_old_image, "OldImage"}, {&str_created, "ApproximateCreationDateTime"},
        {&str_size, "SizeBytes"}, {&str_table_name, "tableName"}, {&str_region, "awsRegion"},
        {&str_sequence, "SequenceNumber"}, {&str_identity, "userIdentity"},
        {&str_type, "type"}, {&str_type_cap, "Type"}, {&str_principal, "principalId"},
        {&str_principal_cap, "PrincipalId"}, {&str_aws_dynamodb, "aws:dynamodb"},
        {&str_json, "application/json"}, {&str_service, "Service"},
        {&str_ttl_principal, "dynamodb.amazonaws.com"}, {&str_insert, "INSERT"},
        {&str_modify, "MODIFY"}, {&str_remove, "REMOVE"}, {&str_source_arn, "eventSourceARN"},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if ((*strings[i].slot = PyUnicode_InternFromString(strings[i].text)) == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < 13; i++) {
        if ((field_names[i] = PyUnicode_InternFromString(fields[i])) == NULL) {
            return -1;
        }
    }
    fields_template = PyDict_New();
    for (int i = 0; fields_template != NULL && i < 13; i++) {
        if (PyDict_SetItem(fields_template, field_names[i], Py_None) < 0) {
            return -1;
        }
    }
    return fields_template == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || intern_all() < 0 || values_init() < 0) {
        return NULL;
    }
    utc = PyDateTime_TimeZone_UTC;
    empty_tuple = PyTuple_New(0);
    if (empty_tuple == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
