#if __has_feature(modules)
#pragma clang module import SwiftGlibc
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
