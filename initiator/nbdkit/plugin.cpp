// nbdkit-hyperscsi-plugin.so: an nbdkit plugin serving one LUN of a HyperSCSI
// target, so NBD clients (nbd-client, qemu, nbdcopy, nbdinfo, fio) can use it.
//   nbdkit ./nbdkit-hyperscsi-plugin.so port=SPEC [target=NAME] lun=N [dead_time=SECONDS]
//          [busy_poll_us=N] [rx_pause_ms=N] [secret_file=F] [protection=P]
// One Initiator (one session) is shared by every NBD connection and every
// nbdkit thread: nbdkit's PARALLEL thread model calls in from many threads,
// each waiting for its own command while the session carries them all at
// once, so the export is as deep as nbdkit's thread count (--threads, 16 by
// default; more measured slower on 2 CPUs, see the man page) and
// multi-conn is safe (one session: a flush covers every connection). Reads
// land straight in nbdkit's buffer. A write-protected LUN is exported
// read-only. Zeroing is WRITE SAME of a zero block. The session's log lines
// go to nbdkit's log (warnings and errors as errors, the rest with -v). The
// session is opened in after_fork (threads do not survive nbdkit's fork),
// after a trial login in get_ready so that bad parameters fail the start.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "hyperscsi/initiator/byte_device.h"
#include "hyperscsi/initiator/initiator.h"

namespace {

using namespace hyperscsi::initiator;

struct Config {
  std::string port;
  std::string target;
  long lun = -1;
  long dead_time_s = 60;
  long busy_poll_us = Options{}.busy_poll.count();
  long rx_pause_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Options{}.rx_pause_after).count();
  std::string secret_file;
  std::string protection = "off";
} config;

std::unique_ptr<Initiator> initiator;
std::unique_ptr<ByteDevice> device;

int fail(const Error& e) {
  nbdkit_error("hyperscsi: %s", e.message.c_str());
  return -1;
}

int set_errno(const Error& e) {
  nbdkit_error("hyperscsi: %s", e.message.c_str());
  nbdkit_set_error(ByteDevice::errno_of(e));
  return -1;
}

int hs_config(const char* key, const char* value) {
  const std::string k(key);
  if (k == "port") {
    config.port = value;
  } else if (k == "target") {
    config.target = value;
  } else if (k == "secret_file") {
    config.secret_file = value;
  } else if (k == "protection") {
    config.protection = value;
  } else if (k == "rx_pause_ms") {
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (!end || *end != '\0' || v < 0 || v > 3600000) {
      nbdkit_error("hyperscsi: rx_pause_ms=%s is not 0..3600000", value);
      return -1;
    }
    config.rx_pause_ms = v;
  } else if (k == "lun" || k == "dead_time" || k == "busy_poll_us") {
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (!end || *end != '\0' || v < 0 || (k == "lun" && v > 65535) ||
        (k == "busy_poll_us" && v > 10000)) {
      nbdkit_error("hyperscsi: %s=%s is not a valid number", key, value);
      return -1;
    }
    (k == "lun" ? config.lun : k == "dead_time" ? config.dead_time_s : config.busy_poll_us) = v;
  } else {
    nbdkit_error("hyperscsi: unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

int hs_config_complete() {
  if (config.port.empty() || config.lun < 0) {
    nbdkit_error("hyperscsi: port=SPEC and lun=N are required");
    return -1;
  }
  return 0;
}

// The session's log (target lost, re-login, failed commands...) in nbdkit's
// log: errors and warnings as nbdkit errors, the rest as debug lines (-v).
void log_line(LogLevel level, const std::string& text) {
  switch (level) {
    case LogLevel::kError:
      nbdkit_error("hyperscsi: %s", text.c_str());
      break;
    case LogLevel::kWarning:
      nbdkit_error("hyperscsi: warning: %s", text.c_str());
      break;
    default:
      nbdkit_debug("hyperscsi: %s", text.c_str());
  }
}

// Opens the session and the LUN from `config` into `ini_out` / `lun_out`.
int open_session(std::unique_ptr<Initiator>& ini_out, std::optional<Lun>& lun_out,
                 std::string& target_name) {
  Options o;
  o.initiator_name = "nbdkit-hyperscsi";
  o.log = log_line;
  o.dead_time = std::chrono::seconds(config.dead_time_s);
  o.busy_poll = std::chrono::microseconds(config.busy_poll_us);
  o.rx_pause_after = std::chrono::milliseconds(config.rx_pause_ms);
  auto level = hyperscsi::proto::parse_protection(config.protection);
  if (!level)
    return fail(Error{ErrorKind::kInvalidArgument, "protection must be off, integrity or encrypt"});
  o.protection = *level;
  if (!config.secret_file.empty()) {
    auto secret = read_secret_file(config.secret_file);
    if (!secret) return fail(secret.error());
    o.secret = std::move(secret).value();
  }
  // port=A,B: one session over both ports (multipath).
  auto ini = Initiator::open(hyperscsi::initiator::split_port_list(config.port), o);
  if (!ini) return fail(ini.error());
  auto t = (*ini)->connect(config.target);
  if (!t) return fail(t.error());
  auto lun = (*ini)->open_lun(static_cast<uint16_t>(config.lun));
  if (!lun) return fail(lun.error());
  target_name = t->name;
  lun_out.emplace(std::move(lun).value());
  ini_out = std::move(ini.value());
  return 0;
}

// Before nbdkit forks into the background: log in once and let go, so a wrong
// port, a target that does not answer or a missing LUN fail nbdkit's start
// with the reason and a non-zero exit status (after the fork its parent has
// already exited 0). The session's threads would not survive the fork, so the
// session that serves is opened again in after_fork.
int hs_get_ready() {
  std::unique_ptr<Initiator> probe;
  std::optional<Lun> lun;
  std::string name;
  if (open_session(probe, lun, name) != 0) return -1;
  lun.reset();
  probe->disconnect();
  return 0;
}

int hs_after_fork() {
  std::optional<Lun> lun;
  std::string name;
  if (open_session(initiator, lun, name) != 0) return -1;
  device = std::make_unique<ByteDevice>(*lun);
  nbdkit_debug("hyperscsi: LUN %ld of '%s': %llu bytes%s", config.lun, name.c_str(),
               static_cast<unsigned long long>(device->size()),
               device->read_only() ? ", write-protected: exported read-only" : "");
  return 0;
}

void hs_cleanup() {
  if (initiator) initiator->disconnect();
  device.reset();
  initiator.reset();
}

void* hs_open(int) {
  return device.get();
}
void hs_close(void*) {}

int64_t hs_get_size(void*) {
  return static_cast<int64_t>(device->size());
}
int hs_can_write(void*) {
  return device->read_only() ? 0 : 1;
}
int hs_can_flush(void*) {
  return 1;
}
int hs_can_trim(void*) {
  return device->read_only() ? 0 : 1;
}
int hs_can_fua(void*) {
  return NBDKIT_FUA_NATIVE;
}
int hs_can_multi_conn(void*) {
  return 1;
}  // one session: a flush covers every connection

int hs_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  *minimum = 1;  // unaligned requests are read-modify-written
  *preferred = std::max<uint32_t>(device->block_size(), 4096);
  *maximum = 0xffffffff;
  return 0;
}

int hs_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t) {
  auto st = device->pread({static_cast<uint8_t*>(buf), count}, offset);
  return st ? 0 : set_errno(st.error());
}

int hs_pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  auto st = device->pwrite({static_cast<const uint8_t*>(buf), count}, offset,
                           (flags & NBDKIT_FLAG_FUA) != 0);
  return st ? 0 : set_errno(st.error());
}

int hs_flush(void*, uint32_t) {
  auto st = device->flush();
  return st ? 0 : set_errno(st.error());
}

int hs_can_zero(void*) {
  return device->read_only() ? 0 : 1;
}
int hs_can_fast_zero(void*) {
  return 0;
}  // WRITE SAME is not promised: a target without it gets writes of zeros

// WRITE SAME of a zero block (or writes of zeros): the range stays allocated.
int hs_zero(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  auto st = device->write_zeroes(offset, count);
  if (st && (flags & NBDKIT_FLAG_FUA) != 0) st = device->flush();
  return st ? 0 : set_errno(st.error());
}

int hs_trim(void*, uint32_t count, uint64_t offset, uint32_t flags) {
  auto st = device->discard(offset, count);
  if (st && (flags & NBDKIT_FLAG_FUA) != 0) st = device->flush();
  return st ? 0 : set_errno(st.error());
}

nbdkit_plugin make_plugin() {
  nbdkit_plugin p{};
  p.name = "hyperscsi";
  p.longname = "HyperSCSI (SCSI over raw Ethernet) initiator";
  p.version = HYPERSCSI_VERSION;
  p.description = "Serves one LUN of a HyperSCSI target";
  p.config = hs_config;
  p.config_complete = hs_config_complete;
  p.config_help =
      "port=SPEC      (required) port, e.g. afpacket:eth1\n"
      "target=NAME    target name (default: the only one answering)\n"
      "lun=N          (required) LUN number\n"
      "dead_time=S    fail a command without reply after S seconds (default 60)\n"
      "secret_file=F  file with the secret shared with the target (authenticated login)\n"
      "protection=P   weakest per-frame protection accepted: off, integrity, encrypt\n"
      "busy_poll_us=N poll up to N us for a reply before sleeping (0..10000, default 50)\n"
      "rx_pause_ms=N  stop receiving after N ms without commands (0: never; default 2000)";
  p.magic_config_key = nullptr;
  p.get_ready = hs_get_ready;
  p.after_fork = hs_after_fork;
  p.cleanup = hs_cleanup;
  p.open = hs_open;
  p.close = hs_close;
  p.get_size = hs_get_size;
  p.can_write = hs_can_write;
  p.can_flush = hs_can_flush;
  p.can_trim = hs_can_trim;
  p.can_zero = hs_can_zero;
  p.can_fast_zero = hs_can_fast_zero;
  p.can_fua = hs_can_fua;
  p.can_multi_conn = hs_can_multi_conn;
  p.block_size = hs_block_size;
  p.pread = hs_pread;
  p.pwrite = hs_pwrite;
  p.flush = hs_flush;
  p.trim = hs_trim;
  p.zero = hs_zero;
  p.errno_is_preserved = 0;
  return p;
}

nbdkit_plugin plugin = make_plugin();

}  // namespace

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
NBDKIT_REGISTER_PLUGIN(plugin)
