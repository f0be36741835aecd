# aarch64-linux-gnu.cmake - cross-compiling for 64-bit ARM Linux with Debian's
# gcc-aarch64-linux-gnu (make test-arm64; README "ARM64"). Libraries come from
# Debian's multiarch arm64 packages (libcmocka-dev:arm64, libjansson-dev:arm64
# in /usr/lib/aarch64-linux-gnu); the programs run under qemu-user, which is
# what ctest calls through CMAKE_CROSSCOMPILING_EMULATOR. Use with
# -DLLAVA_BACKEND_ONLY=ON: the server's libraries are not installed for arm64.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Headers and libraries of the target only; programs (pkg-config, ...) of the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# -cpu max: every extension qemu emulates (dotprod, i8mm, fp16), so that the
# kernels a CPU may or may not have are all exercised. No -L: the programs
# load the multiarch libc6:arm64 (/lib/ld-linux-aarch64.so.1, a dependency of
# libcmocka0:arm64). With -L /usr/aarch64-linux-gnu, the cross toolchain's own
# libc (2.36-8cross1), the first pthread_create hangs under Debian 12's
# qemu-user 7.2, and every test with a thread pool with it.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu max)
