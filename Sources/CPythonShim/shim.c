#include "CPythonShim.h"
#include <structmember.h>
#include <string.h>
#include <stdlib.h>

PyObject *appserver_none(void) { return Py_None; }
PyObject *appserver_true(void) { return Py_True; }
PyObject *appserver_false(void) { return Py_False; }
int appserver_is_bytes(PyObject *o) { return PyBytes_Check(o); }
int appserver_is_exact_bytes(PyObject *o) { return PyBytes_CheckExact(o); }
int appserver_is_str(PyObject *o) { return PyUnicode_Check(o); }
int appserver_is_list(PyObject *o) { return PyList_Check(o); }
int appserver_is_tuple(PyObject *o) { return PyTuple_Check(o); }
int appserver_is_exact_list_or_tuple(PyObject *o) { return PyList_CheckExact(o) || PyTuple_CheckExact(o); }
Py_ssize_t appserver_sequence_fast_size(PyObject *o) { return PySequence_Fast_GET_SIZE(o); }
PyObject *appserver_sequence_fast_item(PyObject *o, Py_ssize_t i) { return PySequence_Fast_GET_ITEM(o, i); }
void appserver_set_error(PyObject *type, const char *message) { PyErr_SetString(type, message); }
PyObject *appserver_exc_type_error(void) { return PyExc_TypeError; }
PyObject *appserver_exc_value_error(void) { return PyExc_ValueError; }
PyObject *appserver_exc_runtime_error(void) { return PyExc_RuntimeError; }
PyObject *appserver_exc_stop_iteration(void) { return PyExc_StopIteration; }
int appserver_is_coroutine(PyObject *o) { return PyCoro_CheckExact(o); }
PyObject *appserver_tuple1(PyObject *a) { return PyTuple_Pack(1, a); }
PyObject *appserver_bare_instance(PyObject *type) {
    PyObject *no_arguments = PyTuple_New(0);
    if (no_arguments == NULL) return NULL;
    PyObject *instance = PyBaseObject_Type.tp_new((PyTypeObject *)type, no_arguments, NULL);
    Py_DECREF(no_arguments);
    return instance;
}
PyObject *appserver_exc_os_error(void) { return PyExc_OSError; }
PyObject *appserver_exc_assertion_error(void) { return PyExc_AssertionError; }
PyObject *appserver_exc_timeout_error(void) { return PyExc_TimeoutError; }
PyObject *appserver_tuple2(PyObject *a, PyObject *b) {
    PyObject *t = PyTuple_New(2);
    if (!t) { Py_XDECREF(a); Py_XDECREF(b); return NULL; }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

const char *appserver_latin1_view(PyObject *o, Py_ssize_t *length) {
    if (!PyUnicode_Check(o)) return NULL;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) < 0) return NULL;   // from 3.12 every str is ready (PEP 623)
#endif
    if (PyUnicode_KIND(o) != PyUnicode_1BYTE_KIND) return NULL;
    *length = PyUnicode_GET_LENGTH(o);
    return (const char *)PyUnicode_DATA(o);
}

const char *appserver_bytes_view(PyObject *o, Py_ssize_t *length) {
    if (!PyBytes_Check(o)) return NULL;
    *length = PyBytes_GET_SIZE(o);
    return PyBytes_AS_STRING(o);
}

static Py_ssize_t dict_footprint(PyObject *dict) {
    PyObject *size = PyObject_CallMethod(dict, "__sizeof__", NULL);
    if (!size) return -1;
    Py_ssize_t result = PyLong_AsSsize_t(size);
    Py_DECREF(size);
    return result;
}

/// Inserts str keys into `dict` one at a time until its footprint changes (its table was re-sized) or `limit`
/// insertions went by: `reused` each time, deleted again after each insertion, or (NULL) a new key each time.
/// 1 when the table was re-sized, 0 when not, -1 with a Python exception set.
static int insert_until_resized(PyObject *dict, PyObject *reused, Py_ssize_t limit) {
    Py_ssize_t before = dict_footprint(dict);
    if (before < 0) return -1;
    for (Py_ssize_t i = 0; i < limit; i++) {
        PyObject *key = reused ? Py_NewRef(reused) : PyUnicode_FromFormat("(appserver: room %zd)", i);
        int failed = !key || PyDict_SetItem(dict, key, Py_None) < 0 || (reused && PyDict_DelItem(dict, key) < 0);
        Py_XDECREF(key);
        if (failed) return -1;
        Py_ssize_t after = dict_footprint(dict);
        if (after < 0) return -1;
        if (after != before) return 1;
    }
    return 0;
}

int appserver_dict_grow_once(PyObject *dict) {
    // Each insertion takes a new entry even when the key was deleted before; once none is left, the
    // next one grows the table (and drops the deleted entries). A str key keeps the str-keys layout.
    PyObject *placeholder = PyUnicode_FromString("(appserver: room for more keys)");
    if (!placeholder) return -1;
    int result = insert_until_resized(dict, placeholder, 3 * PyDict_GET_SIZE(dict) + 9);
    Py_DECREF(placeholder);
    return result < 0 ? -1 : 0;
}

Py_ssize_t appserver_dict_room(PyObject *dict) {
    PyObject *copy = PyDict_Copy(dict);
    if (!copy) return -1;
    int result = insert_until_resized(copy, NULL, 4096);
    Py_ssize_t room = result == 1 ? PyDict_GET_SIZE(copy) - 1 : -1;
    if (result == 0) PyErr_SetString(PyExc_RuntimeError, "a dict's table did not grow in 4096 insertions");
    Py_DECREF(copy);
    return room;
}

int appserver_is_exact_dict(PyObject *o) { return PyDict_CheckExact(o); }
int appserver_is_dict(PyObject *o) { return PyDict_Check(o); }

static int fail(PyStatus status, PyConfig *config, char **error) {
    const char *msg = status.err_msg ? status.err_msg : "unknown error";
    const char *func = status.func ? status.func : "Python";
    size_t n = strlen(msg) + strlen(func) + 4;
    *error = malloc(n);
    if (*error) snprintf(*error, n, "%s: %s", func, msg);
    PyConfig_Clear(config);
    return -1;
}

int appserver_init_python(const char *program_name, char **error) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    // The server owns the signals; Python must not install its own SIGINT handler.
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.buffered_stdio = 0;
    // program_name at the venv's python makes sys.prefix the venv (pyvenv.cfg is found from it);
    // without one, the python3.X this binary was built against (its prefix holds the stdlib).
    PyStatus status = PyConfig_SetBytesString(&config, &config.program_name,
                                              program_name ? program_name : APPSERVER_PYTHON_EXECUTABLE);
    if (PyStatus_Exception(status)) return fail(status, &config, error);
    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status)) return fail(status, &config, error);
    PyConfig_Clear(&config);
    return 0;
}

Py_ssize_t appserver_slot_offset(PyObject *type, PyObject *name) {
    if (!PyType_Check(type)) return -1;
    PyObject *descriptor = PyObject_GetAttr(type, name);   // a member descriptor gives itself for its type
    if (descriptor == NULL) { PyErr_Clear(); return -1; }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type) && PyDescr_TYPE(descriptor) == (PyTypeObject *)type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY) && member->offset > 0) offset = member->offset;
    }
    Py_DECREF(descriptor);
    return offset;
}
