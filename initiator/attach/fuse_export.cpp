#define FUSE_USE_VERSION 31
#include "fuse_export.h"

#include <fcntl.h>
#include <fuse3/fuse.h>
#include <linux/falloc.h>
#include <linux/loop.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace hyperscsi::attach {

namespace {

FuseExport* ctx() {
  return static_cast<FuseExport*>(fuse_get_context()->private_data);
}

bool is_file(const char* path) {
  return path[0] == '/' && ctx()->file_name == path + 1;
}

void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  cfg->direct_io = 1;  // no page cache in between: every read/write is a SCSI command
  cfg->kernel_cache = 0;
  cfg->use_ino = 1;
  cfg->attr_timeout = 3600;
  cfg->entry_timeout = 3600;
  return fuse_get_context()->private_data;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
  std::memset(st, 0, sizeof *st);
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_ino = 1;
    return 0;
  }
  if (!is_file(path)) return -ENOENT;
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_ino = 2;
  st->st_size = static_cast<off_t>(ctx()->device->size());
  st->st_blksize = static_cast<blksize_t>(ctx()->device->block_size());
  st->st_blocks = static_cast<blkcnt_t>(ctx()->device->size() / 512);
  return 0;
}

int op_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
               fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, ctx()->file_name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int op_open(const char* path, fuse_file_info* fi) {
  if (!is_file(path)) return -ENOENT;
  fi->direct_io = 1;
  return 0;
}

int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info*) {
  if (!is_file(path)) return -ENOENT;
  const uint64_t total = ctx()->device->size();
  if (off < 0) return -EINVAL;
  if (static_cast<uint64_t>(off) >= total) return 0;
  size = static_cast<size_t>(std::min<uint64_t>(size, total - static_cast<uint64_t>(off)));
  auto st =
      ctx()->device->pread({reinterpret_cast<uint8_t*>(buf), size}, static_cast<uint64_t>(off));
  if (!st) return -initiator::ByteDevice::errno_of(st.error());
  return static_cast<int>(size);
}

int op_write(const char* path, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  if (!is_file(path)) return -ENOENT;
  if (off < 0) return -EINVAL;
  const uint64_t total = ctx()->device->size();
  if (static_cast<uint64_t>(off) >= total) return -ENOSPC;
  size = static_cast<size_t>(std::min<uint64_t>(size, total - static_cast<uint64_t>(off)));
  const bool fua = (fi->flags & O_DSYNC) != 0;
  auto st = ctx()->device->pwrite({reinterpret_cast<const uint8_t*>(buf), size},
                                  static_cast<uint64_t>(off), fua);
  if (!st) return -initiator::ByteDevice::errno_of(st.error());
  return static_cast<int>(size);
}

int op_fsync(const char* path, int, fuse_file_info*) {
  if (!is_file(path)) return -ENOENT;
  auto st = ctx()->device->flush();
  return st ? 0 : -initiator::ByteDevice::errno_of(st.error());
}

int op_fallocate(const char* path, int mode, off_t off, off_t len, fuse_file_info*) {
  if (!is_file(path)) return -ENOENT;
  if (off < 0 || len < 0) return -EINVAL;
  if (mode == 0) return 0;  // the LUN is fully allocated already
  if (mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) return -EOPNOTSUPP;
  auto st = ctx()->device->discard(static_cast<uint64_t>(off), static_cast<uint64_t>(len));
  return st ? 0 : -initiator::ByteDevice::errno_of(st.error());
}

int op_truncate(const char* path, off_t size, fuse_file_info*) {
  if (!is_file(path)) return -ENOENT;
  return static_cast<uint64_t>(size) == ctx()->device->size() ? 0 : -EPERM;
}

}  // namespace

int serve_fuse(const std::string& dir, FuseExport& exp,
               const std::function<std::string()>& on_ready, std::string& error) {
  fuse_operations ops{};
  ops.init = op_init;
  ops.getattr = op_getattr;
  ops.readdir = op_readdir;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.truncate = op_truncate;

  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "hyperscsi-attach");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, "fsname=hyperscsi,subtype=hyperscsi");
  if (::geteuid() == 0) {
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, "allow_other");
  }
  fuse* f = fuse_new(&args, &ops, sizeof ops, &exp);
  fuse_opt_free_args(&args);
  if (!f) {
    error = "cannot create the FUSE session";
    return 1;
  }
  if (fuse_mount(f, dir.c_str()) != 0) {
    fuse_destroy(f);
    error = "cannot mount FUSE on " + dir + " (does it exist? is /dev/fuse available?)";
    return 1;
  }
  fuse_session* se = fuse_get_session(f);
  fuse_set_signal_handlers(se);
  std::string ready_error;
  std::thread ready([&] {
    ready_error = on_ready();
    if (!ready_error.empty()) {
      fuse_exit(f);
      ::kill(::getpid(), SIGTERM);  // wakes the loop's blocked reads
    }
  });
  const int rc = fuse_loop_mt(f, 0);
  ready.join();
  fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  fuse_destroy(f);
  if (!ready_error.empty()) {
    error = ready_error;
    return 1;
  }
  if (rc != 0) error = "the FUSE loop ended with an error";
  return rc == 0 ? 0 : 1;
}

std::string attach_loop(const std::string& file, bool& direct_io) {
  const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return std::string("error: cannot open /dev/loop-control: ") + std::strerror(errno);
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      ::close(ctl);
      return std::string("error: no free loop device: ") + std::strerror(errno);
    }
    const std::string dev = "/dev/loop" + std::to_string(n);
    const int lfd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (lfd < 0) continue;
    for (int dio = 1; dio >= 0; --dio) {
      const int ffd = ::open(file.c_str(), O_RDWR | O_CLOEXEC | (dio ? O_DIRECT : 0));
      if (ffd < 0) continue;
      loop_config cfg{};
      cfg.fd = static_cast<__u32>(ffd);
      cfg.block_size = 0;
      cfg.info.lo_flags = dio ? LO_FLAGS_DIRECT_IO : 0;
      std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "%s",
                    file.c_str());
      const int rc = ::ioctl(lfd, LOOP_CONFIGURE, &cfg);
      const int err = errno;
      ::close(ffd);
      if (rc == 0) {
        loop_info64 info{};
        direct_io = ::ioctl(lfd, LOOP_GET_STATUS64, &info) == 0 &&
                    (info.lo_flags & LO_FLAGS_DIRECT_IO) != 0;
        ::close(lfd);
        ::close(ctl);
        return dev;
      }
      if (err == EBUSY) break;  // raced with another user: next device
    }
    ::close(lfd);
  }
  ::close(ctl);
  return "error: LOOP_CONFIGURE failed on every free loop device";
}

std::string detach_loop(const std::string& loop_dev) {
  const int fd = ::open(loop_dev.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open ") + loop_dev + ": " + std::strerror(errno);
  const int rc = ::ioctl(fd, LOOP_CLR_FD, 0);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != ENXIO) return std::string("LOOP_CLR_FD failed: ") + std::strerror(err);
  return {};
}

std::string mount_point_of(const std::string& dev) {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string what, where;
    ls >> what >> where;
    if (what == dev) return where;
  }
  return {};
}

}  // namespace hyperscsi::attach
