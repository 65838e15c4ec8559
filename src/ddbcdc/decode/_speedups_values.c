/*
 * AttributeValues -> Python values, as ddbcdc.decode.attributes does on plain dicts and lists
 * (the shapes orjson builds). Every rule mirrors attributes.py, which stays the reference:
 * anything that would raise there, or that arrives in another shape, is left to it.
 */
#include "_speedups.h"

#define MAX_DEPTH 32        /* attributes.MAX_DEPTH */
#define MAX_DIGITS 38       /* significant digits */
#define MIN_ADJUSTED (-130) /* exponent of the leading digit */
#define MAX_ADJUSTED 125
#define MAX_EXPONENT_DIGITS 6
#define LONG_LONG_DIGITS 18 /* digits that always fit a long long */

static PyObject *decimal_type = NULL;
static PyObject *attribute_value(PyObject *attribute, int depth);

static signed char base64_values[256];

static void
base64_table(void)
{
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(base64_values, -1, sizeof base64_values);
    for (int i = 0; i < 64; i++) {
        base64_values[(unsigned char)alphabet[i]] = (signed char)i;
    }
}

int
values_init(void)
{
    PyObject *decimal = PyImport_ImportModule("decimal");
    if (decimal == NULL) {
        return -1;
    }
    decimal_type = PyObject_GetAttrString(decimal, "Decimal");
    Py_DECREF(decimal);
    base64_table();
    return decimal_type == NULL ? -1 : 0;
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* An ASCII str's bytes and length, or NULL when it is not an exact ASCII str. */
static const char *
ascii(PyObject *value, Py_ssize_t *length)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return NULL;
    }
    *length = PyUnicode_GET_LENGTH(value);
    return (const char *)PyUnicode_1BYTE_DATA(value);
}

/* An integer literal: optional sign, then digits (zeros first allowed). */
static PyObject *
integer(int negative, const char *digits, Py_ssize_t count)
{
    while (count > 0 && *digits == '0') {
        digits++;
        count--;
    }
    if (count > MAX_ADJUSTED + 1) {
        return NULL;
    }
    if (count <= LONG_LONG_DIGITS) {
        long long value = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            value = value * 10 + (digits[i] - '0');
        }
        return PyLong_FromLongLong(negative ? -value : value);
    }
    /* From the significant digits only: CPython refuses to convert strings of more than
       4,300 digits, and leading zeros count. The grammar was checked: no spaces, no '_'. */
    char buffer[MAX_ADJUSTED + 3];
    buffer[0] = '-';
    memcpy(buffer + 1, digits, (size_t)count);
    buffer[count + 1] = '\0';
    return PyLong_FromString(negative ? buffer : buffer + 1, NULL, 10);
}

/* A DynamoDB number, as attributes._number: int for integer literals, else Decimal. */
static PyObject *
number(PyObject *value)
{
    Py_ssize_t length, i = 0;
    const char *text = ascii(value, &length);
    if (text == NULL) {
        return NULL;
    }
    int negative = length > 0 && text[0] == '-';
    if (length > 0 && (text[0] == '-' || text[0] == '+')) {
        i++;
    }
    const char *whole = text + i;
    while (i < length && is_digit(text[i])) {
        i++;
    }
    Py_ssize_t whole_count = text + i - whole;
    int has_fraction = i < length && text[i] == '.';
    i += has_fraction;
    const char *fraction = text + i;
    while (i < length && is_digit(text[i])) {
        i++;
    }
    Py_ssize_t fraction_count = text + i - fraction;
    int has_exponent = i < length && (text[i] == 'e' || text[i] == 'E');
    long exponent = 0;
    if (has_exponent) {
        i++;
        int exponent_negative = i < length && text[i] == '-';
        i += i < length && (text[i] == '-' || text[i] == '+');
        Py_ssize_t start = i, significant = 0;
        for (; i < length && is_digit(text[i]); i++) {
            if (significant > 0 || text[i] != '0') {
                if (++significant > MAX_EXPONENT_DIGITS) {
                    return NULL;
                }
                exponent = exponent * 10 + (text[i] - '0');
            }
        }
        if (i == start) {
            return NULL;
        }
        exponent = exponent_negative ? -exponent : exponent;
    }
    if (i != length || (whole_count == 0 && fraction_count == 0)) {
        return NULL;
    }
    /* Significant digits: whole and fraction together, zeros stripped at both ends. */
    Py_ssize_t total = whole_count + fraction_count, first = -1, last = -1;
    for (Py_ssize_t k = 0; k < total; k++) {
        char c = k < whole_count ? whole[k] : fraction[k - whole_count];
        if (c != '0') {
            last = k;
            first = first < 0 ? k : first;
        }
    }
    if (first >= 0 && last - first + 1 > MAX_DIGITS) {
        return NULL;
    }
    if (!has_fraction && !has_exponent) {
        return integer(negative, whole, whole_count);
    }
    /* Decimal(text): coefficient digits (leading zeros dropped, at least one) and
     * exponent give the adjusted exponent DynamoDB bounds. */
    Py_ssize_t coefficient = first < 0 ? 1 : total - first;
    long adjusted = exponent - (long)fraction_count + (long)coefficient - 1;
    if (adjusted < MIN_ADJUSTED || adjusted > MAX_ADJUSTED) {
        return NULL;
    }
    return PyObject_CallOneArg(decimal_type, value);
}

PyObject *
base64_bytes(const unsigned char *text, Py_ssize_t length)
{
    if (length % 4 != 0) {
        return NULL;
    }
    Py_ssize_t padding = length == 0 ? 0 : (text[length - 1] == '=') + (text[length - 2] == '=');
    if (padding == 1 && text[length - 2] == '=') {
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, length / 4 * 3 - padding);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *bytes = (unsigned char *)PyBytes_AS_STRING(out);
    Py_ssize_t end = length - padding, o = 0;
    unsigned int bits = 0;
    for (Py_ssize_t i = 0; i < end; i++) {
        int sextet = base64_values[text[i]];
        if (sextet < 0) {
            Py_DECREF(out);
            return NULL;
        }
        bits = (bits << 6) | (unsigned int)sextet;
        if (i % 4 == 3) {
            bytes[o++] = (unsigned char)(bits >> 16);
            bytes[o++] = (unsigned char)(bits >> 8);
            bytes[o++] = (unsigned char)bits;
            bits = 0;
        }
    }
    /* The tail: its unused low bits must be zero, or the text is not canonical. */
    if ((padding == 2 && (bits & 0xF)) || (padding == 1 && (bits & 0x3))) {
        Py_DECREF(out);
        return NULL;
    }
    if (padding == 2) {
        bytes[o] = (unsigned char)(bits >> 4);
    }
    else if (padding == 1) {
        bytes[o] = (unsigned char)(bits >> 10);
        bytes[o + 1] = (unsigned char)(bits >> 2);
    }
    return out;
}

/* B: strict, canonical base64 text -> bytes; bytes stay bytes (attributes._binary). */
static PyObject *
binary(PyObject *value)
{
    if (PyBytes_CheckExact(value)) {
        return Py_NewRef(value);
    }
    Py_ssize_t length;
    const char *text = ascii(value, &length);
    return text == NULL ? NULL : base64_bytes((const unsigned char *)text, length);
}

static PyObject *
string(PyObject *value)
{
    return PyUnicode_CheckExact(value) ? Py_NewRef(value) : NULL;
}

/* SS / NS / BS: non-empty, no value twice (as Python's set sees "twice"). */
static PyObject *
set_value(PyObject *items, PyObject *(*element)(PyObject *))
{
    if (!PyList_CheckExact(items) || PyList_GET_SIZE(items) == 0) {
        return NULL;
    }
    PyObject *out = PySet_New(NULL);
    for (Py_ssize_t i = 0; out != NULL && i < PyList_GET_SIZE(items); i++) {
        PyObject *item = element(PyList_GET_ITEM(items, i));
        if (item == NULL || PySet_Add(out, item) < 0) {
            Py_CLEAR(out);
        }
        Py_XDECREF(item);
    }
    if (out != NULL && PySet_GET_SIZE(out) != PyList_GET_SIZE(items)) {
        Py_CLEAR(out);
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
    for (Py_ssize_t i = 0; out != NULL && i < length; i++) {
        PyObject *value = attribute_value(PyList_GET_ITEM(items, i), depth + 1);
        if (value == NULL) {
            Py_CLEAR(out);
            break;
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
    Py_ssize_t position = 0, length;
    PyObject *tag, *value;
    PyDict_Next(attribute, &position, &tag, &value);
    const char *name = ascii(tag, &length);
    if (name == NULL) {
        return NULL;
    }
    switch (length) {
    case 1:
        switch (name[0]) {
        case 'S': return string(value);
        case 'N': return number(value);
        case 'B': return binary(value);
        case 'L': return list_value(value, depth);
        case 'M': return depth >= MAX_DEPTH ? NULL : map_value(value, depth + 1);
        }
        return NULL;
    case 2:
        if (name[1] != 'S') {
            return NULL;
        }
        switch (name[0]) {
        case 'S': return set_value(value, string);
        case 'N': return set_value(value, number);
        case 'B': return set_value(value, binary);
        }
        return NULL;
    case 4:
        if (memcmp(name, "BOOL", 4) == 0) {
            return PyBool_Check(value) ? Py_NewRef(value) : NULL;
        }
        if (memcmp(name, "NULL", 4) == 0) {
            return value == Py_True ? Py_NewRef(Py_None) : NULL;
        }
        return NULL;
    }
    return NULL;
}

PyObject *
map_value(PyObject *map, int depth)
{
    if (!PyDict_CheckExact(map)) {
        return NULL;
    }
    PyObject *out = PyDict_New();
    Py_ssize_t position = 0;
    PyObject *name, *attribute;
    while (out != NULL && PyDict_Next(map, &position, &name, &attribute)) {
        PyObject *value = PyUnicode_CheckExact(name) ? attribute_value(attribute, depth) : NULL;
        if (value == NULL || PyDict_SetItem(out, name, value) < 0) {
            Py_CLEAR(out);
        }
        Py_XDECREF(value);
    }
    return out;
}
