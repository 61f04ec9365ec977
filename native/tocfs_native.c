// tocfs's native addon: only what Node cannot do itself, the two /dev/fuse ioctls of FUSE passthrough
// (Linux 6.9+). Loaded optionally by src/fuse/backing.ts; without it tocfs serves every read itself.
//
// The constants are written out (not taken from <linux/fuse.h>) because the build machine's kernel headers may be
// older than the running kernel (Debian 12 ships 7.38, passthrough is 7.40). Checked against include/uapi/linux/fuse.h:
//   struct fuse_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };           (16 bytes)
//   #define FUSE_DEV_IOC_MAGIC          229
//   #define FUSE_DEV_IOC_BACKING_OPEN   _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
//   #define FUSE_DEV_IOC_BACKING_CLOSE  _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#define NAPI_VERSION 8
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <node_api.h>

struct tocfs_fuse_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};

_Static_assert(sizeof(struct tocfs_fuse_backing_map) == 16, "struct fuse_backing_map is 16 bytes");

#define TOCFS_FUSE_DEV_IOC_MAGIC 229
#define TOCFS_FUSE_DEV_IOC_BACKING_OPEN _IOW(TOCFS_FUSE_DEV_IOC_MAGIC, 1, struct tocfs_fuse_backing_map)
#define TOCFS_FUSE_DEV_IOC_BACKING_CLOSE _IOW(TOCFS_FUSE_DEV_IOC_MAGIC, 2, uint32_t)

/* Throw an Error whose .code is the errno name ("EPERM"...) and whose message says which call failed. */
static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s failed: %s (%s)", what, strerror(err), name ? name : "?");
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static int int_arg(napi_env env, napi_callback_info info, size_t n, int32_t *out) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) return -1;
  for (size_t i = 0; i < n; i++) {
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) return -1;
  }
  return 0;
}

/* backingOpen(fuseFd, fileFd) -> backing id (> 0) */
static napi_value backing_open(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (int_arg(env, info, 2, a) != 0) {
    napi_throw_type_error(env, NULL, "backingOpen(fuseFd, fileFd): two integer fds expected");
    return NULL;
  }
  struct tocfs_fuse_backing_map map = { .fd = a[1], .flags = 0, .padding = 0 };
  int id = ioctl(a[0], TOCFS_FUSE_DEV_IOC_BACKING_OPEN, &map);
  if (id < 0) return throw_errno(env, "ioctl(FUSE_DEV_IOC_BACKING_OPEN)", errno);
  napi_value out;
  napi_create_int32(env, id, &out);
  return out;
}

/* backingClose(fuseFd, backingId) */
static napi_value backing_close(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (int_arg(env, info, 2, a) != 0) {
    napi_throw_type_error(env, NULL, "backingClose(fuseFd, backingId): two integers expected");
    return NULL;
  }
  uint32_t id = (uint32_t)a[1];
  if (ioctl(a[0], TOCFS_FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0) return throw_errno(env, "ioctl(FUSE_DEV_IOC_BACKING_CLOSE)", errno);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "backingOpen", NULL, backing_open, NULL, NULL, NULL, napi_enumerable, NULL },
    { "backingClose", NULL, backing_close, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
