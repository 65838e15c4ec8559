/*
 * ddbcdc.decode._speedups: the decode hot path in C (see _speedups.c).
 *
 * Convention of every function here: a new reference on success; NULL with an exception
 * set on a real failure (memory); NULL with no exception set means "not handled here":
 * the caller gives the whole input to the pure-Python path, which decodes it or raises
 * the DecodeError with its attribute path. This code never reports bad input itself.
 */
#ifndef DDBCDC_SPEEDUPS_H
#define DDBCDC_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Load what the value code needs (decimal.Decimal). 0 on success. */
int values_init(void);

/* A DynamoDB attribute map (a dict of AttributeValues), as ddbcdc.decode.attributes.unmarshal. */
PyObject *map_value(PyObject *map, int depth);

/* Strict, canonical base64 (exactly what binascii.b2a_base64 writes) -> bytes. */
PyObject *base64_bytes(const unsigned char *text, Py_ssize_t length);

#endif
