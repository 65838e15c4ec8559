/*
 * ddbcdc._speedups: the hot loop of ddbcdc.attributes.unmarshal, in C.
 *
 * unmarshal(attribute_map) walks a parsed attribute map (plain dicts and lists, as
 * orjson builds them) and returns the same dict ddbcdc.attributes would, or None when it
 * meets anything it does not handle itself: then the pure-Python path runs and either
 * decodes the value or raises the DecodeError with the attribute path. This module never
 * reports bad input itself, so the error rules live in one place (attributes.py).
 *
 * Handled here: S, BOOL, NULL, SS, L, M, and N when it is a plain integer of at most 38
 * ASCII digits. N with a sign, fraction or exponent, B, NS and BS go to the Python
 * handlers given to configure(); a _BadValueError from them means "not handled here".
 *
 * Internal convention: NULL with no exception set means "leave it to Python".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>

#define MAX_DEPTH 32
#define MAX_INT_DIGITS 38

static PyObject *handlers = NULL;   /* dict: tag -> callable(value, depth) */
static PyObject *bad_value = NULL;  /* ddbcdc.attributes._BadValueError */

static PyObject *map_value(PyObject *map, int depth);
static PyObject *attribute_value(PyObject *attribute, int depth);

/* The tag as up to four ASCII bytes, or 0 when it is not a short ASCII str. */
static Py_ssize_t
tag_bytes(PyObject *tag, const char **out)
{
    if (!PyUnicode_CheckExact(tag) || !PyUnicode_IS_ASCII(tag)) {
        return 0;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(tag);
    if (length < 1 || length > 4) {
        return 0;
    }
    *out = (const char *)PyUnicode_1BYTE_DATA(tag);
    return length;
}

static PyObject *
plain_integer(PyObject *text)
{
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) {
        return NULL;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (length < 1 || length > MAX_INT_DIGITS) {
        return NULL;
    }
    const char *digits = (const char *)PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < length; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return NULL;
        }
    }
    /* The buffer is NUL-terminated: CPython keeps one after the data of every str. */
    return PyLong_FromString(digits, NULL, 10);
}

static PyObject *
call_handler(PyObject *tag, PyObject *value, int depth)
{
    PyObject *handler = PyDict_GetItemWithError(handlers, tag);
    if (handler == NULL) {
        return NULL; /* unknown tag (or an error, which stays set) */
    }
    PyObject *py_depth = PyLong_FromLong(depth);
    if (py_depth == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallFunctionObjArgs(handler, value, py_depth, NULL);
    Py_DECREF(py_depth);
    if (result == NULL && PyErr_ExceptionMatches(bad_value)) {
        PyErr_Clear();
    }
    return result;
}

static PyObject *
string_set(PyObject *items)
{
    if (!PyList_CheckExact(items)) {
        return NULL;
    }
    Py_ssize_t length = PyList_GET_SIZE(items);
    if (length == 0) {
        return NULL;
    }
    PyObject *out = PySet_New(NULL);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyUnicode_CheckExact(item) || PySet_Add(out, item) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (PySet_GET_SIZE(out) != length) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
list_value(PyObject *items, int depth)
{
    if (!PyList_CheckExact(items) || depth >= MAX_DEPTH) {
        return NULL;
    }
    Py_ssize_t length = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(length);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        PyObject *value = attribute_value(PyList_GET_ITEM(items, i), depth + 1);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, value);
    }
    return out;
}

static PyObject *
attribute_value(PyObject *attribute, int depth)
{
    if (!PyDict_CheckExact(attribute) || PyDict_GET_SIZE(attribute) != 1) {
        return NULL;
    }
    Py_ssize_t position = 0;
    PyObject *tag, *value;
    PyDict_Next(attribute, &position, &tag, &value);
    const char *name;
    switch (tag_bytes(tag, &name)) {
    case 1:
        if (name[0] == 'S') {
            return PyUnicode_CheckExact(value) ? Py_NewRef(value) : NULL;
        }
        if (name[0] == 'N') {
            PyObject *number = plain_integer(value);
            if (number != NULL || PyErr_Occurred()) {
                return number;
            }
            return call_handler(tag, value, depth);
        }
        if (name[0] == 'L') {
            return list_value(value, depth);
        }
        if (name[0] == 'M') {
            return depth >= MAX_DEPTH ? NULL : map_value(value, depth + 1);
        }
        break;
    case 2:
        if (name[0] == 'S' && name[1] == 'S') {
            return string_set(value);
        }
        break;
    case 4:
        if (memcmp(name, "BOOL", 4) == 0) {
            return PyBool_Check(value) ? Py_NewRef(value) : NULL;
        }
        if (memcmp(name, "NULL", 4) == 0) {
            return value == Py_True ? Py_NewRef(Py_None) : NULL;
        }
        break;
    default:
        return NULL;
    }
    return call_handler(tag, value, depth);
}

static PyObject *
map_value(PyObject *map, int depth)
{
    if (!PyDict_CheckExact(map)) {
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t position = 0;
    PyObject *name, *attribute;
    while (PyDict_Next(map, &position, &name, &attribute)) {
        PyObject *value = PyUnicode_CheckExact(name) ? attribute_value(attribute, depth) : NULL;
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        int failed = PyDict_SetItem(out, name, value);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
unmarshal(PyObject *module, PyObject *map)
{
    if (handlers == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ddbcdc._speedups.configure() was not called");
        return NULL;
    }
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
    *str_ttl_principal, *str_insert, *str_modify, *str_remove;
static PyObject *field_names[13];

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
    if (PyErr_Occurred()) {
        return -1;
    }
    return event == REMOVE && kind != NULL && principal != NULL && equals(kind, str_service)
           && equals(principal, str_ttl_principal);
}

/* An image, unmarshalled; *out stays NULL when absent or null. 0: leave it to Python. */
static int
image(PyObject *dynamodb, PyObject *key, int forbidden, int event, PyObject **out)
{
    PyObject *map = PyDict_GetItemWithError(dynamodb, key);
    *out = NULL;
    if (map == NULL || map == Py_None) {
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
    if (PyErr_Occurred() || !event || event_id == NULL || !PyUnicode_CheckExact(event_id)
        || PyUnicode_GET_LENGTH(event_id) == 0 || !absent_or(raw, str_event_source, str_aws_dynamodb)
        || !absent_or(raw, str_record_format, str_json) || dynamodb == NULL
        || !PyDict_CheckExact(dynamodb) || table == NULL || !PyUnicode_CheckExact(table)
        || (region != NULL && region != Py_None && !PyUnicode_CheckExact(region))) {
        return NULL;
    }
    PyObject *size = PyDict_GetItemWithError(dynamodb, str_size);
    PyObject *keys_map = PyDict_GetItemWithError(dynamodb, str_keys);
    long long micros = created_us(PyDict_GetItemWithError(dynamodb, str_created), factor);
    int ttl = ttl_delete(PyDict_GetItemWithError(raw, str_identity), event);
    if (PyErr_Occurred() || micros < 0 || ttl < 0 || keys_map == NULL
        || !PyDict_CheckExact(keys_map) || PyDict_GET_SIZE(keys_map) == 0
        || (size != NULL && size != Py_None && (!PyLong_CheckExact(size) || Py_SIZE(size) < 0))) {
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
    out = PyDict_New();
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
    if (handlers == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ddbcdc._speedups.configure() was not called");
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

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *new_handlers, *new_bad_value;
    if (!PyArg_ParseTuple(args, "O!O!:configure", &PyDict_Type, &new_handlers,
                          &PyType_Type, &new_bad_value)) {
        return NULL;
    }
    Py_XSETREF(handlers, Py_NewRef(new_handlers));
    Py_XSETREF(bad_value, Py_NewRef(new_bad_value));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"unmarshal", unmarshal, METH_O,
     "unmarshal(attribute_map) -> dict, or None to leave the map to the Python path."},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL,
     "build(raw, factor, shard_id, sequence_number) -> the ChangeRecord fields, or None."},
    {"configure", configure, METH_VARARGS,
     "configure(handlers, bad_value_error): the Python handlers for the other tags."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ddbcdc._speedups",
    .m_doc = "The hot loop of ddbcdc.attributes.unmarshal, in C.",
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
        {&str_modify, "MODIFY"}, {&str_remove, "REMOVE"},
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
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || intern_all() < 0) {
        return NULL;
    }
    utc = PyDateTime_TimeZone_UTC;
    return PyModule_Create(&module);
}
