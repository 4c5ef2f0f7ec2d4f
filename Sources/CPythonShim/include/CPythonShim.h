// What Swift cannot reach in the CPython API by itself: object macros and
// singletons (Py_None, Py_True), type-check macros, and variadic functions.
// Also the one place for what differs between the CPython versions the server builds against
// (3.10 to 3.13, PY_VERSION_HEX): the Swift code calls the same functions on each.
#ifndef APPSERVER_CPYTHON_SHIM_H
#define APPSERVER_CPYTHON_SHIM_H
#if __has_feature(modules)
#pragma clang module import SwiftGlibc
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/// Grows a dict's table once, so that a copy of it (PyDict_Copy clones the table) has room for about as many
/// entries again as it holds (CPython sizes a grown table at three times the entries). The table keeps the
/// compact layout of a dict with str keys only (3.11+: 16 bytes an entry); _PyDict_NewPresized makes the
/// general one (24), which put the WSGI environ's table past glibc's per-thread cache (1,032 bytes), so every
/// request's copy went through malloc's slow path. One deleted placeholder is left in the table. 0, or -1
/// with a Python exception set.
int appserver_dict_grow_once(PyObject *dict);

/// How many keys a copy of `dict` holds before its table grows: measured once, on a copy filled with str
/// placeholder keys until its footprint changes. -1 with a Python exception set.
Py_ssize_t appserver_dict_room(PyObject *dict);

/// A new dict with room for `size` entries, so that filling it does not re-hash it as it grows (CPython's
/// _PyDict_NewPresized, private API that 3.10-3.13 export; the general table layout). Without it, a plain dict.
static inline PyObject *appserver_dict_presized(Py_ssize_t size) {
#if PY_VERSION_HEX < 0x030E0000
    return _PyDict_NewPresized(size);
#else
    (void)size;
    return PyDict_New();
#endif
}

PyObject *appserver_none(void);            // borrowed
PyObject *appserver_true(void);            // borrowed
PyObject *appserver_false(void);           // borrowed
int appserver_is_bytes(PyObject *o);
int appserver_is_exact_bytes(PyObject *o);
int appserver_is_str(PyObject *o);
int appserver_is_list(PyObject *o);
int appserver_is_tuple(PyObject *o);
int appserver_is_exact_list_or_tuple(PyObject *o);
Py_ssize_t appserver_sequence_fast_size(PyObject *o);
PyObject *appserver_sequence_fast_item(PyObject *o, Py_ssize_t i);   // borrowed
/// Sets a Python exception of the given type with a message (PyErr_SetString is enough; kept for symmetry).
void appserver_set_error(PyObject *type, const char *message);
PyObject *appserver_exc_type_error(void);
PyObject *appserver_exc_value_error(void);
PyObject *appserver_exc_runtime_error(void);
PyObject *appserver_exc_stop_iteration(void);
PyObject *appserver_exc_os_error(void);
PyObject *appserver_exc_assertion_error(void);
PyObject *appserver_exc_timeout_error(void);
/// Builds a tuple (a, b) of new references stolen from the arguments.
PyObject *appserver_tuple2(PyObject *a, PyObject *b);
/// A new tuple (a,); `a` is not stolen.
PyObject *appserver_tuple1(PyObject *a);
/// A new instance of a Python class made by `object.__new__` alone: no `__init__` runs (its frame is about half the
/// cost of making a request's task identity). The caller sets the attributes.
PyObject *appserver_bare_instance(PyObject *type);
/// A coroutine object (what an `async def` function returns).
int appserver_is_coroutine(PyObject *o);
/// The bytes of a str whose characters all fit in latin-1 (the WSGI "native string" rule), without
/// copying; NULL when the string has wider characters or is not a str.
const char *appserver_latin1_view(PyObject *o, Py_ssize_t *length);
/// The bytes object's buffer and size (no copy); NULL when not bytes.
const char *appserver_bytes_view(PyObject *o, Py_ssize_t *length);
int appserver_is_exact_dict(PyObject *o);
int appserver_is_dict(PyObject *o);
/// PyConfig setup: the variadic-free pieces Swift cannot express conveniently.
int appserver_init_python(const char *program_name, char **error);

/// Where instances of `type` keep the `__slots__` member `name`: its offset, or -1 when `name` is not a
/// writable slot that holds any object (T_OBJECT_EX). Through the offset an attribute is read and
/// written without the attribute protocol's lookups (~150 instructions a set on an instance dict).
Py_ssize_t appserver_slot_offset(PyObject *type, PyObject *name);
/// The object in a slot (borrowed; NULL when unset). The offset is one `appserver_slot_offset` gave
/// for the object's type.
static inline PyObject *appserver_slot_get(PyObject *object, Py_ssize_t offset) {
    return *(PyObject **)((char *)object + offset);
}
/// Stores a new reference to `value` in a slot and drops the one it held.
static inline void appserver_slot_set(PyObject *object, Py_ssize_t offset, PyObject *value) {
    PyObject **slot = (PyObject **)((char *)object + offset);
    PyObject *old = *slot;
    Py_INCREF(value);
    *slot = value;
    Py_XDECREF(old);
}
#endif
