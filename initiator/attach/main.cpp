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
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "fuse_export.h"
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

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// --- discover ---

struct LunRow {
  proto::LunInfo info;
  std::string vendor, product, error;
};

int cmd_discover(const std::string& port, const std::string& target_filter, bool json) {
  auto ini = Initiator::open(port, base_options());
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
  std::printf("%-24s %-17s %4s %12s %6s %-8s %-16s\n", "TARGET", "MAC", "LUN", "CAPACITY", "BLOCK",
              "VENDOR", "PRODUCT");
  for (size_t i = 0; i < targets->size(); ++i) {
    const auto& t = (*targets)[i];
    if (rows[i].empty())
      std::printf("%-24s %-17s %4s\n", t.name.c_str(), io::to_string(t.mac).c_str(), "-");
    for (const auto& r : rows[i]) {
      std::printf(
          "%-24s %-17s %4u %12s %6u %-8s %-16s%s%s\n", t.name.c_str(), io::to_string(t.mac).c_str(),
          r.info.lun, human_size(r.info.num_blocks * r.info.block_size).c_str(), r.info.block_size,
          r.vendor.c_str(), r.product.c_str(), r.error.empty() ? "" : "  error: ", r.error.c_str());
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
                                                     const std::string& target) {
  auto ini = Initiator::open(port, base_options());
  if (!ini) return Unexpected{ini.error()};
  auto t = (*ini)->connect(target);
  if (!t) return Unexpected{t.error()};
  return std::move(ini.value());
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
};

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

int run_attach(const AttachArgs& a, int report_fd) {
  Reporter report(report_fd);
  const std::string dir = a.dir;
  const std::string state_file = attach::state_path(dir);
  auto ini = connect_to(a.port, a.target);
  if (!ini) {
    report.error(ini.error().message);
    return 1;
  }
  auto lun = (*ini)->open_lun(a.lun);
  if (!lun) {
    report.error(lun.error().message);
    return 1;
  }
  ByteDevice device(*lun);
  attach::FuseExport exp{&device, "lun" + std::to_string(a.lun)};
  exp.readers = a.fuse_readers;
  const std::string file = dir + "/" + exp.file_name;
  std::mutex state_mutex;
  StateMap state{{"pid", std::to_string(::getpid())},
                 {"dir", dir},
                 {"file", file},
                 {"port", a.port},
                 {"target", (*ini)->target().name},
                 {"mac", io::to_string((*ini)->target().mac)},
                 {"lun", std::to_string(a.lun)},
                 {"size", std::to_string(device.size())},
                 {"block_size", std::to_string(device.block_size())},
                 {"loop", ""}};
  std::string loop_dev;
  std::atomic<bool> stop_stats{false};
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  std::thread stats_thread;

  auto refresh = [&] {
    const Stats s = (*ini)->stats();
    std::lock_guard l(state_mutex);
    state["state"] = s.state;
    state["session_id"] = std::to_string(s.session_id);
    state["epoch"] = std::to_string(s.epoch);
    state["mtu"] = std::to_string(s.mtu);
    state["max_transfer"] = std::to_string(s.max_transfer);
    state["commands_submitted"] = std::to_string(s.submitted);
    state["commands_completed"] = std::to_string(s.completed);
    state["commands_failed"] = std::to_string(s.failed);
    state["commands_reissued"] = std::to_string(s.reissued);
    state["commands_retried"] = std::to_string(s.retried);
    state["resumes"] = std::to_string(s.resumes);
    state["relogins"] = std::to_string(s.relogins);
    state["bytes_in"] = std::to_string(s.bytes_in);
    state["bytes_out"] = std::to_string(s.bytes_out);
    state["in_flight"] = std::to_string(s.in_flight);
    state["frames_retransmitted"] = std::to_string(s.transport.frames_retransmitted);
    state["srtt_us"] = std::to_string(
        std::chrono::duration_cast<std::chrono::microseconds>(s.transport.srtt).count());
    state["cwnd"] = std::to_string(s.transport.cwnd);
    attach::write_state(state_file, state);
  };

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
      std::lock_guard l(state_mutex);
      state["loop"] = loop_dev;
      state["loop_direct_io"] = dio ? "1" : "0";
    }
    refresh();
    stats_thread = std::thread([&] {
      std::unique_lock l(stop_mutex);
      while (!stop_cv.wait_for(l, std::chrono::seconds(1), [&] { return stop_stats.load(); })) {
        l.unlock();
        refresh();
        l.lock();
      }
    });
    std::string text = "file " + file + "\n";
    if (!loop_dev.empty()) text += "loop " + loop_dev + "\n";
    if (device.read_only())
      text += "read-only: LUN " + std::to_string(a.lun) +
              " is write-protected (the file is 0400, the loop device read-only)\n";
    report.ok(text);
    return {};
  };

  std::string error;
  const int rc = attach::serve_fuse(dir, exp, on_ready, error);
  {
    std::lock_guard l(stop_mutex);
    stop_stats = true;
  }
  stop_cv.notify_all();
  if (stats_thread.joinable()) stats_thread.join();
  if (!loop_dev.empty()) attach::detach_loop(loop_dev);  // normally done by detach already
  (*ini)->disconnect();
  std::remove(state_file.c_str());
  if (rc != 0) {
    report.error(error);
    return 1;
  }
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
  if (a.foreground) return run_attach(a, -1);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return fail("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    // The daemon logs to a file in the run directory.
    const std::string log = attach::state_path(a.dir) + ".log";
    std::error_code ec;
    std::filesystem::create_directories(attach::run_dir(), ec);
    const int devnull = ::open("/dev/null", O_RDWR);
    const int logfd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
    }
    if (logfd >= 0) ::dup2(logfd, 2);
    const int rc = run_attach(a, fds[1]);
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
  if (msg.empty())
    return fail("the attach daemon ended without reporting (see its log in " + attach::run_dir() +
                ")");
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
  } else {
    // A dead daemon left its mount behind: clear it.
    std::string cmd =
        "fusermount3 -u -z '" + dir + "' 2>/dev/null || umount -l '" + dir + "' 2>/dev/null";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
    std::remove(path.c_str());
  }
  std::printf("detached %s\n", dir.c_str());
  return 0;
}

int cmd_list() {
  std::printf("%-28s %-20s %4s %10s %-12s %-12s %8s %10s %9s\n", "DIRECTORY", "TARGET", "LUN",
              "SIZE", "LOOP", "STATE", "PID", "COMMANDS", "REISSUED");
  for (const auto& path : attach::list_states()) {
    auto st = attach::read_state(path);
    if (!st) continue;
    StateMap& s = *st;
    const bool alive = attach::pid_alive(std::atoi(s["pid"].c_str()));
    std::printf(
        "%-28s %-20s %4s %10s %-12s %-12s %8s %10s %9s\n", s["dir"].c_str(), s["target"].c_str(),
        s["lun"].c_str(), human_size(std::strtoull(s["size"].c_str(), nullptr, 10)).c_str(),
        s["loop"].empty() ? "-" : s["loop"].c_str(), alive ? s["state"].c_str() : "daemon-gone",
        s["pid"].c_str(), s["commands_completed"].c_str(), s["commands_reissued"].c_str());
  }
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

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"hyperscsi-attach: use LUNs of HyperSCSI targets on this machine"};
  app.set_version_flag("--version", std::string("hyperscsi-attach ") + HYPERSCSI_VERSION);
  app.require_subcommand(1);

  std::string port, target, dir, data_out_file, hex;
  bool json = false;
  uint16_t lun = 0;
  uint32_t data_in = 0;
  AttachArgs aa;

  auto* discover = app.add_subcommand("discover", "list targets and LUNs on a port");
  discover->add_option("--port", port, "port spec, e.g. afpacket:eth1")->required();
  discover->add_option("--target", target, "only this target name");
  discover->add_flag("--json", json, "JSON output");

  auto* cdb = app.add_subcommand("cdb", "send a raw CDB (hex) and print the outcome");
  cdb->add_option("--port", port, "port spec")->required();
  cdb->add_option("--target", target, "target name (default: the only one)");
  cdb->add_option("--lun", lun, "LUN")->required();
  auto* din = cdb->add_option("--data-in", data_in, "bytes of data-in to accept");
  auto* dout = cdb->add_option("--data-out", data_out_file, "file with the data-out bytes");
  din->excludes(dout);
  cdb->add_option("HEXCDB", hex, "the CDB in hex, e.g. 120000006000 or '12 00 00 00 60 00'")
      ->required();

  auto* att = app.add_subcommand("attach", "expose a LUN as a file (FUSE) and a loop device");
  std::string secret_file, protection = "off";
  auto busy_poll_us = static_cast<unsigned>(Options{}.busy_poll.count());
  att->add_option("--busy-poll-us", busy_poll_us,
                  "poll up to this many microseconds for a reply before sleeping (0: always "
                  "sleep)")
      ->check(CLI::Range(0u, 10000u))
      ->capture_default_str();
  for (CLI::App* sub : {cdb, att}) {
    sub->add_option("--secret-file", secret_file,
                    "file with the secret shared with the target (authenticated login)");
    sub->add_option("--protection", protection,
                    "weakest per-frame protection accepted: off, integrity, encrypt");
  }
  att->add_option("--port", aa.port, "port spec")->required();
  att->add_option("--target", aa.target, "target name (default: the only one)");
  att->add_option("--lun", aa.lun, "LUN")->required();
  att->add_option("--fuse", aa.dir, "directory to mount the FUSE file system on")->required();
  att->add_flag("--loop", aa.loop, "bind the file to a loop device");
  att->add_flag("--foreground", aa.foreground, "stay in the foreground");
  att->add_option("--fuse-readers", aa.fuse_readers,
                  "threads reading FUSE requests (0: the session's own I/O thread)")
      ->check(CLI::Range(0u, 16u))
      ->capture_default_str();

  auto* det = app.add_subcommand("detach", "tear down an attachment");
  det->add_option("DIR", dir, "the FUSE directory given to attach")->required();

  auto* lst = app.add_subcommand("list", "attached LUNs with session state and counters");
  auto* sts = app.add_subcommand("stats", "all counters of one or every attachment");
  sts->add_option("DIR", dir, "the FUSE directory (default: all)");

  CLI11_PARSE(app, argc, argv);
  auto level = proto::parse_protection(protection);
  if (!level) return fail("--protection must be off, integrity or encrypt");
  g_security.protection = *level;
  g_security.busy_poll = std::chrono::microseconds(busy_poll_us);
  if (!secret_file.empty()) {
    auto secret = read_secret_file(secret_file);
    if (!secret) return fail(secret.error());
    g_security.secret = std::move(secret).value();
  } else if (*level != proto::Protection::kOff) {
    return fail("--protection needs --secret-file (the keys come from the shared secret)");
  }
  if (discover->parsed()) return cmd_discover(port, target, json);
  if (cdb->parsed()) return cmd_cdb(port, target, lun, data_in, data_out_file, hex);
  if (att->parsed()) return cmd_attach(aa);
  if (det->parsed()) return cmd_detach(dir);
  if (lst->parsed()) return cmd_list();
  if (sts->parsed()) return cmd_stats(dir);
  return 1;
}
