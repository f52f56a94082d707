// hyperscsi-attach: discover targets, send raw CDBs, and attach a remote LUN
// as a local file (FUSE) and block device (loop).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "attach_config.h"
#include "fuse_export.h"
#include "hyperscsi/base/json.h"
#include "hyperscsi/initiator/byte_device.h"
#include "hyperscsi/initiator/initiator.h"
#include "state.h"

namespace {

using namespace hyperscsi;
using namespace hyperscsi::initiator;
using attach::StateMap;

int fail(const std::string& message) {
  std::fprintf(stderr, "hyperscsi-attach: error: %s\n", message.c_str());
  return 1;
}

int fail(const Error& e) {
  return fail(e.message);
}

std::string initiator_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return std::string("hyperscsi-attach@") + host;
}

// Secret, protection and busy polling from the command line, read once in main().
Options g_security;

Options base_options() {
  Options o = g_security;
  o.initiator_name = initiator_name();
  return o;
}

std::string human_size(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

using base::json_escape;

// --- discover ---

struct LunRow {
  proto::LunInfo info;
  std::string vendor, product, error;
};

int cmd_discover(const std::string& port, const std::string& target_filter, bool json) {
  auto ini = Initiator::open(split_port_list(port), base_options());
  if (!ini) return fail(ini.error());
  auto targets = (*ini)->discover(target_filter);
  if (!targets) return fail(targets.error());
  std::vector<std::vector<LunRow>> rows;
  for (const auto& t : *targets) {
    std::vector<LunRow> luns;
    auto st = (*ini)->connect(t);
    for (const auto& l : t.luns) {
      LunRow r{l, "", "", ""};
      if (!st) {
        r.error = st.error().message;
      } else if (auto lun = (*ini)->open_lun(l.lun); !lun) {
        r.error = lun.error().message;
      } else if (auto inq = lun->inquiry(); !inq) {
        r.error = inq.error().message;
      } else {
        r.vendor = inq->vendor;
        r.product = inq->product;
      }
      luns.push_back(std::move(r));
    }
    if (st) (*ini)->disconnect();
    rows.push_back(std::move(luns));
  }
  if (json) {
    std::printf("[");
    for (size_t i = 0; i < targets->size(); ++i) {
      const auto& t = (*targets)[i];
      std::printf("%s\n  {\"target\": \"%s\", \"mac\": \"%s\", \"mtu\": %u, \"luns\": [",
                  i ? "," : "", json_escape(t.name).c_str(), io::to_string(t.mac).c_str(), t.mtu);
      for (size_t j = 0; j < rows[i].size(); ++j) {
        const auto& r = rows[i][j];
        std::printf(
            "%s\n    {\"lun\": %u, \"capacity\": %llu, \"block_size\": %u, "
            "\"read_only\": %s, \"vendor\": \"%s\", \"product\": \"%s\"%s%s%s}",
            j ? "," : "", r.info.lun,
            static_cast<unsigned long long>(r.info.num_blocks * r.info.block_size),
            r.info.block_size, r.info.read_only ? "true" : "false", json_escape(r.vendor).c_str(),
            json_escape(r.product).c_str(), r.error.empty() ? "" : ", \"error\": \"",
            r.error.empty() ? "" : json_escape(r.error).c_str(), r.error.empty() ? "" : "\"");
      }
      std::printf("]}");
    }
    std::printf("\n]\n");
    return 0;
  }
  std::printf("%-24s %-17s %4s %12s %6s %-3s %-8s %-16s\n", "TARGET", "MAC", "LUN", "CAPACITY",
              "BLOCK", "RO", "VENDOR", "PRODUCT");
  for (size_t i = 0; i < targets->size(); ++i) {
    const auto& t = (*targets)[i];
    if (rows[i].empty())
      std::printf("%-24s %-17s %4s\n", t.name.c_str(), io::to_string(t.mac).c_str(), "-");
    for (const auto& r : rows[i]) {
      std::printf("%-24s %-17s %4u %12s %6u %-3s %-8s %-16s%s%s\n", t.name.c_str(),
                  io::to_string(t.mac).c_str(), r.info.lun,
                  human_size(r.info.num_blocks * r.info.block_size).c_str(), r.info.block_size,
                  r.info.read_only ? "yes" : "no", r.vendor.c_str(), r.product.c_str(),
                  r.error.empty() ? "" : "  error: ", r.error.c_str());
    }
  }
  return 0;
}

// --- cdb ---

bool parse_hex(const std::string& text, std::vector<uint8_t>& out) {
  std::string digits;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == ':' || c == ',') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    digits += c;
  }
  if (digits.empty() || digits.size() % 2 != 0) return false;
  for (size_t i = 0; i < digits.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoul(digits.substr(i, 2), nullptr, 16)));
  return true;
}

void hex_dump(const std::vector<uint8_t>& data) {
  for (size_t off = 0; off < data.size(); off += 16) {
    std::printf(" %04zx    ", off);
    for (size_t i = 0; i < 16; ++i) {
      if (off + i < data.size())
        std::printf("%02x ", data[off + i]);
      else
        std::printf("   ");
      if (i == 7) std::printf(" ");
    }
    std::printf("   ");
    for (size_t i = 0; i < 16 && off + i < data.size(); ++i) {
      const uint8_t c = data[off + i];
      std::putchar(c >= 0x20 && c < 0x7f ? c : '.');
    }
    std::putchar('\n');
  }
}

Result<std::unique_ptr<Initiator>, Error> connect_to(const std::string& port,
                                                     const std::string& target,
                                                     Options options = base_options()) {
  auto ini = Initiator::open(split_port_list(port), std::move(options));
  if (!ini) return Unexpected{ini.error()};
  auto t = (*ini)->connect(target);
  if (!t) return Unexpected{t.error()};
  return std::move(ini.value());
}

// connect_to, retried every second for up to wait_s seconds while the
// interface is absent or no target answers (at boot the NIC or the server may
// come up after us); a LUN, access or secret problem is final at once.
Result<std::unique_ptr<Initiator>, Error> connect_waiting(const std::string& port,
                                                          const std::string& target,
                                                          uint32_t wait_s, const Options& options) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
  for (;;) {
    auto ini = connect_to(port, target, options);
    if (ini) return ini;
    const Error& e = ini.error();
    const bool transient = e.kind == ErrorKind::kNoTarget || e.kind == ErrorKind::kInterfaceAbsent;
    if (!transient || wait_s == 0) return ini;
    if (std::chrono::steady_clock::now() >= deadline)
      return Unexpected{Error{e.kind, e.message + " (waited " + std::to_string(wait_s) + " s)"}};
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int cmd_cdb(const std::string& port, const std::string& target, uint16_t lun, uint32_t data_in,
            const std::string& data_out_file, const std::string& hex) {
  ScsiCommand c;
  c.lun = lun;
  if (!parse_hex(hex, c.cdb) || c.cdb.size() > proto::kMaxCdbLength)
    return fail("CDB '" + hex + "' is not 1..32 bytes of hex");
  if (!data_out_file.empty()) {
    std::ifstream in(data_out_file, std::ios::binary);
    if (!in) return fail("cannot read " + data_out_file);
    in.seekg(0, std::ios::end);
    const auto len = static_cast<size_t>(std::max<std::streamoff>(in.tellg(), 0));
    in.seekg(0);
    c.data_out.resize(len);
    in.read(reinterpret_cast<char*>(c.data_out.data()), static_cast<std::streamsize>(len));
    if (!in) return fail("cannot read " + data_out_file);
  }
  c.data_in_length = data_in;
  auto ini = connect_to(port, target);
  if (!ini) return fail(ini.error());
  if (const TargetInfo t = (*ini)->target(); !t.luns.empty()) {
    bool found = false;
    for (const auto& l : t.luns) found |= l.lun == lun;
    if (!found) std::fprintf(stderr, "warning: the target did not list LUN %u in discovery\n", lun);
  }
  CommandResult r = (*ini)->execute(std::move(c)).get();
  (*ini)->disconnect();
  if (r.error != CompletionError::kNone) return fail(r.describe());
  std::printf("SCSI status: %s (0x%02x)\n", std::string(scsi::status_name(r.status)).c_str(),
              r.status);
  if (!r.sense.empty()) {
    std::printf("Sense: %s\n", scsi::describe_sense(r.sense).c_str());
    std::printf("Sense data (%zu bytes):\n", r.sense.size());
    hex_dump(r.sense);
  }
  if (r.residual) std::printf("Residual: %u bytes\n", r.residual);
  if (data_in > 0) {
    std::printf("Received %zu bytes of data:\n", r.data_in.size());
    hex_dump(r.data_in);
  }
  return r.status == 0 ? 0 : 3;
}

// --- attach ---

struct AttachArgs {
  std::string port, target, dir;
  uint16_t lun = 0;
  bool loop = false;
  bool foreground = false;
  unsigned fuse_readers = 0;
  uint32_t wait_s = 0;  // retry while no target answers (connect_waiting)
  bool shared = false;  // attach even if this host has the LUN attached already
};

// A live attachment of the same LUN elsewhere on this host: the same
// identity, or (for a target without identities) the same target and LUN.
std::optional<StateMap> attached_elsewhere(const std::string& dir, const std::string& identity,
                                           const std::string& target, const std::string& mac,
                                           uint16_t lun) {
  for (const auto& path : attach::list_states()) {
    auto st = attach::read_state(path);
    if (!st || (*st)["dir"] == dir || !attach::pid_alive(std::atoi((*st)["pid"].c_str()))) continue;
    StateMap& s = *st;
    const bool same_id = !identity.empty() && s["identity"] == identity;
    const bool same_lun =
        s["target"] == target && s["mac"] == mac && s["lun"] == std::to_string(lun);
    if (same_id || same_lun) return st;
  }
  return std::nullopt;
}

attach::AttachLog::Level log_level(LogLevel l) {
  switch (l) {
    case LogLevel::kError:
      return attach::AttachLog::Level::kError;
    case LogLevel::kWarning:
      return attach::AttachLog::Level::kWarning;
    default:
      return attach::AttachLog::Level::kInfo;
  }
}

// Reports the attach outcome to the waiting parent (or stdout in foreground).
class Reporter {
 public:
  explicit Reporter(int fd) : fd_(fd) {}
  void ok(const std::string& text) { send('O', text); }
  void error(const std::string& text) { send('E', text); }

 private:
  void send(char kind, const std::string& text) {
    if (fd_ < 0) {
      if (kind == 'E')
        fail(text);
      else
        std::printf("%s", text.c_str()), std::fflush(stdout);
      return;
    }
    std::string msg(1, kind);
    msg += text;
    [[maybe_unused]] ssize_t n = ::write(fd_, msg.data(), msg.size());
    ::close(fd_);
    fd_ = -1;
  }
  int fd_;
};

// The session's counters as the state file's keys (`hyperscsi-attach stats`).
void put_stats(StateMap& state, const Stats& s) {
  auto us = [](auto d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  state["state"] = s.state;
  state["session_id"] = std::to_string(s.session_id);
  state["epoch"] = std::to_string(s.epoch);
  state["mtu"] = std::to_string(s.mtu);
  state["max_transfer"] = std::to_string(s.max_transfer);
  state["commands_submitted"] = std::to_string(s.submitted);
  state["commands_completed"] = std::to_string(s.completed);
  state["commands_failed"] = std::to_string(s.failed);
  state["commands_timed_out"] = std::to_string(s.timed_out);
  state["commands_fenced"] = std::to_string(s.fenced);
  state["relogin_failures"] = std::to_string(s.relogin_failures);
  state["identity_mismatches"] = std::to_string(s.identity_mismatches);
  state["commands_reissued"] = std::to_string(s.reissued);
  state["commands_retried"] = std::to_string(s.retried);
  state["resumes"] = std::to_string(s.resumes);
  state["relogins"] = std::to_string(s.relogins);
  state["bytes_in"] = std::to_string(s.bytes_in);
  state["bytes_out"] = std::to_string(s.bytes_out);
  state["in_flight"] = std::to_string(s.in_flight);
  state["frames_retransmitted"] = std::to_string(s.transport.frames_retransmitted);
  state["srtt_us"] = us(s.transport.srtt);
  state["cwnd"] = std::to_string(s.transport.cwnd);
  state["rx_filter"] = s.rx_filter;
  state["foreign_frames"] = std::to_string(s.foreign_frames);
  state["rx_pauses"] = std::to_string(s.rx_pauses);
  // A multipath session: one entry per path (stats prints them in order).
  for (const PathStats& p : s.paths) {
    char key[32];
    std::snprintf(key, sizeof key, "path_%02u", static_cast<unsigned>(p.id));
    state[key] = p.state + " " + io::to_string(p.local_mac) + " -> " + io::to_string(p.target_mac) +
                 " mtu " + std::to_string(p.mtu) + " frames out " + std::to_string(p.frames_sent) +
                 " in " + std::to_string(p.frames_received) + " retransmitted " +
                 std::to_string(p.frames_retransmitted) + " srtt " + us(p.srtt) + "us failovers " +
                 std::to_string(p.failures);
  }
}

// The attachment's state file: what it is (written once) and how its session
// fares (put_stats, refreshed every second). Thread-safe: refresh() runs on
// the refresher thread and on_ready's thread.
class AttachState {
 public:
  AttachState(std::string path, StateMap initial)
      : path_(std::move(path)), state_(std::move(initial)) {}
  const std::string& path() const { return path_; }
  void set(const std::string& key, const std::string& value) {
    std::lock_guard l(mutex_);
    state_[key] = value;
  }
  bool write() {
    std::lock_guard l(mutex_);
    return attach::write_state(path_, state_);
  }
  void refresh(const Stats& s) {
    std::lock_guard l(mutex_);
    put_stats(state_, s);
    attach::write_state(path_, state_);
  }

 private:
  const std::string path_;
  std::mutex mutex_;
  StateMap state_;
};

// Calls `tick` once a second on its own thread from start() until stop()
// (or destruction) returns.
class Ticker {
 public:
  ~Ticker() { stop(); }
  void start(std::function<void()> tick) {
    thread_ = std::thread([this, tick = std::move(tick)] {
      std::unique_lock l(mutex_);
      while (!cv_.wait_for(l, std::chrono::seconds(1), [this] { return stopping_; })) {
        l.unlock();
        tick();
        l.lock();
      }
    });
  }
  void stop() {
    {
      std::lock_guard l(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// Checks that the LUN is not attached elsewhere on this host (unless --shared)
// and registers this attachment, in one step under the run directory's lock,
// so two attaches of one LUN cannot both pass. Returns why it refused, or "".
std::string register_attachment(const AttachArgs& a, const TargetInfo& target,
                                const std::string& identity, AttachState& state,
                                attach::AttachLog& log) {
  attach::RunDirLock lock;
  if (auto other =
          attached_elsewhere(a.dir, identity, target.name, io::to_string(target.mac), a.lun)) {
    const std::string where = (*other)["dir"] + " (pid " + (*other)["pid"] + ")";
    if (!a.shared)
      return "LUN " + std::to_string(a.lun) + " of target '" + target.name +
             "' is already attached on this host at " + where +
             "; two attachments let two file systems write one disk. Detach it "
             "first, or pass --shared when a cluster file system coordinates them";
    log.write(attach::AttachLog::Level::kWarning,
              "--shared: LUN " + std::to_string(a.lun) + " is also attached at " + where);
  }
  state.write();
  return {};
}

// The attach daemon's body. `journal_fd`: journald's stream when run by
// systemd, else -1; `echo_fd`: where to print log lines too (foreground).
int run_attach(const AttachArgs& a, int report_fd, int journal_fd, int echo_fd) {
  Reporter report(report_fd);
  attach::AttachLog log;
  log.open(a.dir, journal_fd, echo_fd);
  auto refuse = [&](const std::string& why) {
    log.write(attach::AttachLog::Level::kError, "attach failed: " + why);
    report.error(why);
    return 1;
  };
  Options options = base_options();
  options.log = [&log](LogLevel l, const std::string& text) { log.write(log_level(l), text); };
  auto ini = connect_waiting(a.port, a.target, a.wait_s, options);
  if (!ini) return refuse(ini.error().message);
  auto lun = (*ini)->open_lun(a.lun);
  if (!lun) return refuse(lun.error().message);
  const TargetInfo target = (*ini)->target();
  const std::string identity = (*ini)->lun_identity(a.lun);
  ByteDevice device(*lun);
  attach::FuseExport exp{&device, "lun" + std::to_string(a.lun)};
  exp.readers = a.fuse_readers;
  const std::string file = a.dir + "/" + exp.file_name;
  AttachState state(attach::state_path(a.dir), {{"pid", std::to_string(::getpid())},
                                                {"dir", a.dir},
                                                {"file", file},
                                                {"port", a.port},
                                                {"target", target.name},
                                                {"mac", io::to_string(target.mac)},
                                                {"lun", std::to_string(a.lun)},
                                                {"identity", identity},
                                                {"shared", a.shared ? "1" : "0"},
                                                {"size", std::to_string(device.size())},
                                                {"block_size", std::to_string(device.block_size())},
                                                {"state", "attaching"},
                                                {"loop", ""}});
  if (std::string why = register_attachment(a, target, identity, state, log); !why.empty())
    return refuse(why);
  // From here on the state file is ours to remove, whatever happens.
  struct StateGuard {
    std::string path;
    ~StateGuard() { attach::remove_state(path); }
  } state_guard{state.path()};
  std::string loop_dev;
  Ticker stats_ticker;
  auto refresh = [&] { state.refresh((*ini)->stats()); };

  std::atomic<bool> ready{false};  // reported to the parent: past attaching
  auto on_ready = [&]() -> std::string {
    if (a.loop) {
      bool dio = false;
      loop_dev = attach::attach_loop(file, device.block_size(), device.read_only(), dio);
      if (loop_dev.rfind("error: ", 0) == 0) {
        std::string msg = loop_dev.substr(7);
        loop_dev.clear();
        report.error(msg);
        return msg;
      }
      state.set("loop", loop_dev);
      state.set("loop_direct_io", dio ? "1" : "0");
    }
    refresh();
    stats_ticker.start(refresh);
    std::string text = "file " + file + "\n";
    if (!loop_dev.empty()) text += "loop " + loop_dev + "\n";
    if (device.read_only())
      text += "read-only: LUN " + std::to_string(a.lun) +
              " is write-protected (the file is 0400, the loop device read-only)\n";
    log.write(attach::AttachLog::Level::kInfo,
              "attached LUN " + std::to_string(a.lun) + " of target '" + target.name + "' (" +
                  io::to_string(target.mac) + "), " + human_size(device.size()) +
                  (identity.empty() ? ", no identity" : ", identity " + identity) + ": " + file +
                  (loop_dev.empty() ? "" : " on " + loop_dev) + (a.shared ? " (shared)" : ""));
    report.ok(text);
    ready = true;
    return {};
  };

  std::string error;
  const int rc = attach::serve_fuse(a.dir, exp, on_ready, error);
  stats_ticker.stop();
  if (!loop_dev.empty()) attach::detach_loop(loop_dev);  // normally done by detach already
  (*ini)->disconnect();
  if (rc != 0) {
    if (!ready) return refuse(error);
    log.write(attach::AttachLog::Level::kError, "the attachment ended: " + error);
    return 1;
  }
  log.write(attach::AttachLog::Level::kInfo, "detached");
  return 0;
}

int cmd_attach(AttachArgs a) {
  if (a.loop && ::geteuid() != 0) return fail("not root: --loop needs root (loop devices)");
  struct stat st {};
  if (::stat(a.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail("FUSE directory " + a.dir + " does not exist or is not a directory");
  a.dir = attach::absolute_path(a.dir);
  if (auto s = attach::read_state(attach::state_path(a.dir))) {
    if (attach::pid_alive(std::atoi((*s)["pid"].c_str())))
      return fail(a.dir + " is already attached (pid " + (*s)["pid"] + "); detach it first");
  }
  if (a.foreground) {
    // Under systemd our standard error is the journal: log there with priorities.
    const bool journal = attach::stderr_is_journal();
    return run_attach(a, -1, journal ? 2 : -1, journal ? -1 : 2);
  }

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return fail("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    // The daemon logs to the run directory's attach.log, and keeps the
    // journal's stream when started by systemd; anything else written to
    // standard error (libraries) lands in the log too.
    const int journal = attach::stderr_is_journal() ? ::fcntl(2, F_DUPFD_CLOEXEC, 3) : -1;
    std::error_code ec;
    std::filesystem::create_directories(attach::run_dir(), ec);
    const int devnull = ::open("/dev/null", O_RDWR);
    const int logfd =
        ::open(attach::log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
    }
    if (logfd >= 0) ::dup2(logfd, 2);
    const int rc = run_attach(a, fds[1], journal, -1);
    std::_Exit(rc);  // a program, not library code; skip static destructors of the parent image
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      msg.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(fds[0]);
  if (msg.empty()) {
    // It died before reporting: nothing of it may stay registered.
    const std::string state_file = attach::state_path(a.dir);
    if (auto left = attach::read_state(state_file);
        left && std::atoi((*left)["pid"].c_str()) == pid)
      attach::remove_state(state_file);
    return fail("the attach daemon ended without reporting (see " + attach::log_path() + ")");
  }
  if (msg[0] == 'E') return fail(msg.substr(1));
  std::printf("%s", msg.substr(1).c_str());
  return 0;
}

// --- detach, list, stats ---

int cmd_detach(const std::string& dir_arg) {
  const std::string dir = attach::absolute_path(dir_arg);
  const std::string path = attach::state_path(dir);
  auto st = attach::read_state(path);
  if (!st) return fail(dir + " is not attached (no state file " + path + ")");
  StateMap& s = *st;
  const int pid = std::atoi(s["pid"].c_str());
  const std::string loop = s["loop"];
  if (!loop.empty()) {
    const std::string mp = attach::mount_point_of(loop);
    if (!mp.empty()) return fail(loop + " is mounted on " + mp + ": unmount it first");
    if (auto err = attach::detach_loop(loop); !err.empty())
      return fail("cannot detach " + loop + ": " + err);
  }
  if (attach::pid_alive(pid)) {
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 300 && attach::pid_alive(pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (attach::pid_alive(pid))
      return fail("the attach daemon (pid " + std::to_string(pid) + ") did not exit within 15 s");
    attach::remove_state(path);  // the daemon removes it; make sure
  } else {
    // A dead daemon left its mount behind: clear it.
    std::string cmd =
        "fusermount3 -u -z '" + dir + "' 2>/dev/null || umount -l '" + dir + "' 2>/dev/null";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
    attach::remove_state(path);
  }
  std::printf("detached %s\n", dir.c_str());
  return 0;
}

// --- up, down: attachments named in attach.toml (attach_config.h) ---

int cmd_up(const std::string& name, const std::string& config_path) {
  auto cfg = attach::load_attach_config(config_path, false);
  if (!cfg) return fail(cfg.error().message);
  const auto it = cfg->by_name.find(name);
  if (it == cfg->by_name.end()) return fail("no attachment [attach." + name + "] in " + cfg->path);
  const attach::Attachment& c = it->second;
  g_security.protection = *proto::parse_protection(c.protection);  // validated by the parser
  g_security.dead_time = std::chrono::seconds(c.dead_time_s);
  if (c.busy_poll_us >= 0) g_security.busy_poll = std::chrono::microseconds(c.busy_poll_us);
  if (!c.secret_file.empty()) {
    auto secret = read_secret_file(c.secret_file);
    if (!secret) return fail(secret.error());
    g_security.secret = std::move(secret).value();
  }
  std::error_code ec;
  std::filesystem::create_directories(c.fuse_dir, ec);
  if (ec) return fail("cannot create " + c.fuse_dir + ": " + ec.message());
  return cmd_attach(
      AttachArgs{c.port, c.target, c.fuse_dir, c.lun, c.loop, false, c.wait_s, false});
}

int cmd_down(const std::string& name, const std::string& config_path) {
  auto cfg = attach::load_attach_config(config_path, false);
  if (!cfg) return fail(cfg.error().message);
  const auto it = cfg->by_name.find(name);
  if (it == cfg->by_name.end()) return fail("no attachment [attach." + name + "] in " + cfg->path);
  return cmd_detach(it->second.fuse_dir);
}

int cmd_list(bool json) {
  if (json) {
    // One object per attachment: numbers as numbers, the rest as strings.
    static const std::set<std::string> numeric = {"pid",
                                                  "lun",
                                                  "size",
                                                  "block_size",
                                                  "session_id",
                                                  "epoch",
                                                  "mtu",
                                                  "max_transfer",
                                                  "bytes_in",
                                                  "bytes_out",
                                                  "in_flight",
                                                  "cwnd",
                                                  "srtt_us",
                                                  "resumes",
                                                  "relogins",
                                                  "relogin_failures",
                                                  "identity_mismatches",
                                                  "frames_retransmitted"};
    std::printf("[");
    bool first = true;
    for (const auto& path : attach::list_states()) {
      auto st = attach::read_state(path);
      if (!st) continue;
      StateMap& s = *st;
      if (!attach::pid_alive(std::atoi(s["pid"].c_str()))) s["state"] = "daemon-gone";
      std::printf("%s\n  {", first ? "" : ",");
      first = false;
      bool first_key = true;
      for (const auto& [k, v] : s) {
        const bool number = (numeric.count(k) || k.rfind("commands_", 0) == 0) && !v.empty() &&
                            v.find_first_not_of("0123456789") == std::string::npos;
        std::printf("%s\"%s\": %s%s%s", first_key ? "" : ", ", json_escape(k).c_str(),
                    number ? "" : "\"", number ? v.c_str() : json_escape(v).c_str(),
                    number ? "" : "\"");
        first_key = false;
      }
      std::printf("}");
    }
    std::printf("\n]\n");
    return 0;
  }
  std::printf("%-28s %-20s %4s %10s %-12s %-12s %8s %10s %7s %9s\n", "DIRECTORY", "TARGET", "LUN",
              "SIZE", "LOOP", "STATE", "PID", "COMMANDS", "FAILED", "REISSUED");
  for (const auto& path : attach::list_states()) {
    auto st = attach::read_state(path);
    if (!st) continue;
    StateMap& s = *st;
    const bool alive = attach::pid_alive(std::atoi(s["pid"].c_str()));
    std::printf("%-28s %-20s %4s %10s %-12s %-12s %8s %10s %7s %9s\n", s["dir"].c_str(),
                s["target"].c_str(), s["lun"].c_str(),
                human_size(std::strtoull(s["size"].c_str(), nullptr, 10)).c_str(),
                s["loop"].empty() ? "-" : s["loop"].c_str(),
                alive ? s["state"].c_str() : "daemon-gone", s["pid"].c_str(),
                s["commands_completed"].c_str(), s["commands_failed"].c_str(),
                s["commands_reissued"].c_str());
  }
  // Attachments configured for boot, attached or not.
  std::set<std::string> attached;
  for (const auto& path : attach::list_states())
    if (auto s = attach::read_state(path); s && attach::pid_alive(std::atoi((*s)["pid"].c_str())))
      attached.insert((*s)["dir"]);
  auto cfg = attach::load_attach_config(attach::default_config_path(), true);
  if (!cfg) return fail(cfg.error().message);
  std::printf("%s", attach::describe_configured(*cfg, attached).c_str());
  return 0;
}

int cmd_stats(const std::string& dir) {
  std::vector<std::string> paths;
  if (!dir.empty())
    paths.push_back(attach::state_path(attach::absolute_path(dir)));
  else
    paths = attach::list_states();
  if (paths.empty()) std::printf("nothing attached\n");
  for (const auto& p : paths) {
    auto st = attach::read_state(p);
    if (!st) return fail("not attached: no state file " + p);
    std::printf("[%s]\n", (*st)["dir"].c_str());
    for (const auto& [k, v] : *st) std::printf("  %-22s %s\n", k.c_str(), v.c_str());
  }
  return 0;
}

// What the command line fills besides AttachArgs.
struct CliValues {
  std::vector<std::string> ports, attach_ports;  // --port of discover/cdb, of attach
  std::string target, dir, data_out_file, hex;
  std::string secret_file, protection = "off";
  std::string name, config_path = attach::default_config_path();
  bool json = false, list_json = false;
  uint16_t lun = 0;
  uint32_t data_in = 0;
  unsigned busy_poll_us = static_cast<unsigned>(Options{}.busy_poll.count());
  unsigned dead_time_s = 60;
};

CLI::App* add_attach_command(CLI::App& app, CliValues& v, AttachArgs& aa) {
  auto* att = app.add_subcommand("attach", "expose a LUN as a file (FUSE) and a loop device");
  att->add_option("--busy-poll-us", v.busy_poll_us,
                  "poll up to this many microseconds for a reply before sleeping (0: always "
                  "sleep)")
      ->check(CLI::Range(0u, 10000u))
      ->capture_default_str();
  att->add_option("--port", v.attach_ports, "port spec (repeat: multipath)")->required();
  att->add_option("--target", aa.target, "target name (default: the only one)");
  att->add_option("--lun", aa.lun, "LUN")->required();
  att->add_option("--fuse", aa.dir, "directory to mount the FUSE file system on")->required();
  att->add_flag("--loop", aa.loop, "bind the file to a loop device");
  att->add_flag("--foreground", aa.foreground, "stay in the foreground");
  att->add_option("--fuse-readers", aa.fuse_readers,
                  "threads reading FUSE requests (0: the session's own I/O thread)")
      ->check(CLI::Range(0u, 16u))
      ->capture_default_str();
  att->add_option("--dead-time", v.dead_time_s,
                  "seconds without a reply before a command fails with an I/O error")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  att->add_flag("--shared", aa.shared,
                "attach even if this host has the LUN attached already (cluster file systems)");
  att->add_option("--wait", aa.wait_s,
                  "seconds to keep retrying while no target answers or the interface is absent");
  return att;
}

// g_security from the parsed options; an error message if they do not fit.
std::optional<std::string> set_up_security(const CliValues& v) {
  auto level = proto::parse_protection(v.protection);
  if (!level) return "--protection must be off, integrity or encrypt";
  g_security.protection = *level;
  g_security.busy_poll = std::chrono::microseconds(v.busy_poll_us);
  g_security.dead_time = std::chrono::seconds(v.dead_time_s);
  if (!v.secret_file.empty()) {
    auto secret = read_secret_file(v.secret_file);
    if (!secret) return secret.error().message;
    g_security.secret = std::move(secret).value();
  } else if (*level != proto::Protection::kOff) {
    return "--protection needs --secret-file (the keys come from the shared secret)";
  }
  return std::nullopt;
}

// The port list travels as "A,B" (the attach state and list show it so).
std::string join_ports(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& p : v) {
    if (!out.empty()) out += ',';
    out += p;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"hyperscsi-attach: use LUNs of HyperSCSI targets on this machine"};
  app.set_version_flag("--version", std::string("hyperscsi-attach ") + HYPERSCSI_VERSION);
  app.require_subcommand(1);
  CliValues v;
  AttachArgs aa;

  auto* discover = app.add_subcommand("discover", "list targets and LUNs on a port");
  // --port A --port B (or A,B): one session over every port (multipath).
  discover->add_option("--port", v.ports, "port spec, e.g. afpacket:eth1 (repeat: multipath)")
      ->required();
  discover->add_option("--target", v.target, "only this target name");
  discover->add_flag("--json", v.json, "JSON output");

  auto* cdb = app.add_subcommand("cdb", "send a raw CDB (hex) and print the outcome");
  cdb->add_option("--port", v.ports, "port spec (repeat: multipath)")->required();
  cdb->add_option("--target", v.target, "target name (default: the only one)");
  cdb->add_option("--lun", v.lun, "LUN")->required();
  auto* din = cdb->add_option("--data-in", v.data_in, "bytes of data-in to accept");
  auto* dout = cdb->add_option("--data-out", v.data_out_file, "file with the data-out bytes");
  din->excludes(dout);
  cdb->add_option("HEXCDB", v.hex, "the CDB in hex, e.g. 120000006000 or '12 00 00 00 60 00'")
      ->required();

  auto* att = add_attach_command(app, v, aa);
  for (CLI::App* sub : {cdb, att}) {
    sub->add_option("--secret-file", v.secret_file,
                    "file with the secret shared with the target (authenticated login)");
    sub->add_option("--protection", v.protection,
                    "weakest per-frame protection accepted: off, integrity, encrypt");
  }

  auto* up = app.add_subcommand("up", "attach the attachment NAME of the configuration file");
  auto* down = app.add_subcommand("down", "detach the attachment NAME of the configuration file");
  for (CLI::App* sub : {up, down}) {
    sub->add_option("NAME", v.name, "its table [attach.NAME]")->required();
    sub->add_option("--config", v.config_path, "configuration file")->capture_default_str();
  }

  auto* det = app.add_subcommand("detach", "tear down an attachment");
  det->add_option("DIR", v.dir, "the FUSE directory given to attach")->required();

  auto* lst = app.add_subcommand("list", "attached LUNs with session state and counters");
  lst->add_flag("--json", v.list_json, "JSON output");
  auto* sts = app.add_subcommand("stats", "all counters of one or every attachment");
  sts->add_option("DIR", v.dir, "the FUSE directory (default: all)");

  CLI11_PARSE(app, argc, argv);
  const std::string port = join_ports(v.ports);
  if (!v.attach_ports.empty()) aa.port = join_ports(v.attach_ports);
  if (auto error = set_up_security(v)) return fail(*error);
  if (discover->parsed()) return cmd_discover(port, v.target, v.json);
  if (cdb->parsed()) return cmd_cdb(port, v.target, v.lun, v.data_in, v.data_out_file, v.hex);
  if (att->parsed()) return cmd_attach(aa);
  if (det->parsed()) return cmd_detach(v.dir);
  if (lst->parsed()) return cmd_list(v.list_json);
  if (up->parsed()) return cmd_up(v.name, v.config_path);
  if (down->parsed()) return cmd_down(v.name, v.config_path);
  if (sts->parsed()) return cmd_stats(v.dir);
  return 1;
}
