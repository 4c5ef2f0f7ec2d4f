#if __has_feature(modules)
#pragma clang module import SwiftGlibc
#endif
#include <systemd/sd-daemon.h>
