// fuse_floor: the loop device's path with nothing behind it. Serves one file
// of SIZE MiB from memory over libfuse3's low-level API, set up as
// hyperscsi-attach's FUSE export is (direct I/O, asynchronous direct I/O,
// 1 MiB requests, max_background 512, replies from one thread that reads
// /dev/fuse) but answering every read and write at once from RAM: a loop
// device on this file costs what the block layer, the loop worker and FUSE
// cost on this machine, the part of the attached disk no network stack can
// remove (bench/fuse-floor.sh runs fio on it).
//
// With `poll` the one thread spins on a non-blocking /dev/fuse instead of
// sleeping in read(): no wake-up on this side, the best a FUSE server can do
// for one request at a time (it burns a CPU).
//
// Usage: fuse_floor MOUNTPOINT SIZE_MIB [poll]   (foreground; SIGTERM or unmount ends it)
#define FUSE_USE_VERSION 34
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kFileIno = 2;
constexpr const char* kFileName = "disk";

struct Disk {
  uint8_t* data = nullptr;
  uint64_t size = 0;
};

Disk& disk(fuse_req_t req) {
  return *static_cast<Disk*>(fuse_req_userdata(req));
}

struct stat attr_of(fuse_ino_t ino, uint64_t size) {
  struct stat st {};
  st.st_ino = ino;
  if (ino == kRootIno) {
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
  } else {
    st.st_mode = S_IFREG | 0644;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(size);
  }
  return st;
}

void op_init(void*, fuse_conn_info* conn) {
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  conn->max_background = 512;
  conn->congestion_threshold = 384;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != kRootIno || std::strcmp(name, kFileName) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_entry_param e{};
  e.ino = kFileIno;
  e.generation = 1;
  e.attr = attr_of(kFileIno, disk(req).size);
  e.attr_timeout = e.entry_timeout = 3600;
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != kRootIno && ino != kFileIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  const struct stat st = attr_of(ino, disk(req).size);
  fuse_reply_attr(req, &st, 3600);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kFileIno) {
    fuse_reply_err(req, ino == kRootIno ? EISDIR : ENOENT);
    return;
  }
  fi->direct_io = 1;
  fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  const Disk& d = disk(req);
  if (off < 0 || static_cast<uint64_t>(off) >= d.size) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  size = static_cast<size_t>(std::min<uint64_t>(size, d.size - static_cast<uint64_t>(off)));
  fuse_reply_buf(req, reinterpret_cast<const char*>(d.data + off), size);
}

void op_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              fuse_file_info*) {
  Disk& d = disk(req);
  if (off < 0 || static_cast<uint64_t>(off) + size > d.size) {
    fuse_reply_err(req, ENOSPC);
    return;
  }
  std::memcpy(d.data + off, buf, size);
  fuse_reply_write(req, size);
}

void op_ok(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  fuse_reply_err(req, 0);
}

// fuse_session_loop's job, reading without sleeping.
int spin_loop(fuse_session* se) {
  const int fd = fuse_session_fd(se);
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) return -errno;
  fuse_buf buf{};
  int res = 0;
  while (!fuse_session_exited(se)) {
    res = fuse_session_receive_buf(se, &buf);
    if (res == -EAGAIN || res == -EINTR) continue;
    if (res <= 0) break;
    fuse_session_process_buf(se, &buf);
  }
  std::free(buf.mem);
  return res < 0 && res != -EAGAIN && res != -EINTR ? res : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool poll = argc == 4 && std::strcmp(argv[3], "poll") == 0;
  if (argc != 3 && !poll) {
    std::fprintf(stderr, "usage: fuse_floor MOUNTPOINT SIZE_MIB [poll]\n");
    return 2;
  }
  char* end = nullptr;
  const unsigned long mib = std::strtoul(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || mib == 0 || mib > (1u << 20)) {
    std::fprintf(stderr, "fuse_floor: SIZE_MIB must be 1..1048576, not '%s'\n", argv[2]);
    return 2;
  }
  Disk d;
  d.size = static_cast<uint64_t>(mib) << 20;
  void* mem = ::mmap(nullptr, d.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::fprintf(stderr, "fuse_floor: %lu MiB: %s\n", mib, std::strerror(errno));
    return 1;
  }
  d.data = static_cast<uint8_t*>(mem);
  // Every page present before the first request (no faults in the figures).
  for (uint64_t i = 0; i < d.size; i += 4096) d.data[i] = static_cast<uint8_t>(i >> 12);

  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_ok;
  ops.release = op_ok;
  ops.fsync = op_fsync;
  char arg0[] = "fuse_floor";
  char* args_v[] = {arg0, nullptr};
  fuse_args args = FUSE_ARGS_INIT(1, args_v);
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &d);
  if (se == nullptr) return 1;
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, argv[1]) == 0) {
      std::printf("fuse_floor: serving %s/%s (%lu MiB)\n", argv[1], kFileName, mib);
      std::fflush(stdout);
      rc = (poll ? spin_loop(se) : fuse_session_loop(se)) < 0 ? 1 : 0;
      fuse_session_unmount(se);
    } else {
      std::fprintf(stderr, "fuse_floor: cannot mount on %s\n", argv[1]);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  ::munmap(mem, d.size);
  return rc;
}
