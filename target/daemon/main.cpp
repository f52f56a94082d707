// hyperscsi-target: exports files, block devices and RAM disks as SCSI LUNs
// over HyperSCSI (raw Ethernet).
//
//   hyperscsi-target --port afpacket:eth1 --lun 0=/srv/disk.img --lun 1=ram:1G
//   hyperscsi-target --config /etc/hyperscsi/target.toml
//   hyperscsi-target stats [--control PATH | --name NAME] [--json]
//
// Signals: SIGTERM/SIGINT drain in-flight commands, flush every LUN and exit
// 0; SIGHUP re-reads the config file (access lists, LUNs added and removed).
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

// CLI11's inline string helpers trip GCC 12's -Wnull-dereference (false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "config.h"
#include "control.h"
#include "hyperscsi/engine/target_engine.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "lun_factory.h"
#include "port_claim.h"

namespace hd = hyperscsi::daemon;
namespace he = hyperscsi::engine;

namespace {

struct Flags {
  std::vector<std::string> ports;
  std::vector<std::string> luns;
  std::vector<int> read_only_luns;
  std::vector<int> exclusive_luns;
  std::string name;
  uint32_t block_size = 512;
  bool block_size_set = false;
  hyperscsi::store::RbdOptions ceph;
  std::string config;
  std::string control;
  std::string log_level = "info";
  bool log_level_set = false;  // given on the command line: wins over the file's
  uint32_t dead_time_ms = 0;
  uint32_t keepalive_ms = 0;
  uint32_t drain_timeout_ms = 10000;
  bool no_multipath = false;
  bool read_thread = false;
};

int fail(const std::string& message) {
  spdlog::error("{}", message);
  return 1;
}

// Tells systemd (Type=notify) we are ready, when started by it.
void notify_systemd(const char* state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof(addr.sun_path)) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ::sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  ::close(fd);
}

hyperscsi::Result<hd::DaemonConfig, hd::ConfigError> config_from_flags(const Flags& f) {
  hd::DaemonConfig c;
  if (!f.name.empty()) c.target_name = f.name;
  c.ports = f.ports;
  for (const std::string& l : f.luns) {
    auto lun = hd::parse_lun_flag(l, f.block_size);
    if (!lun) return hyperscsi::Unexpected(lun.error());
    c.luns.push_back(std::move(lun).value());
    c.luns.back().block_size_set = f.block_size_set;
  }
  c.ceph = f.ceph;
  hd::apply_ceph_settings(c);
  for (int ro : f.read_only_luns) {
    bool found = false;
    for (auto& l : c.luns)
      if (l.number == ro) l.read_only = found = true;
    if (!found)
      return hyperscsi::Unexpected(
          hd::ConfigError{"--read-only-lun " + std::to_string(ro) + ": no such --lun"});
  }
  for (int ex : f.exclusive_luns) {
    bool found = false;
    for (auto& l : c.luns)
      if (l.number == ex) l.exclusive = found = true;
    if (!found)
      return hyperscsi::Unexpected(
          hd::ConfigError{"--exclusive-lun " + std::to_string(ex) + ": no such --lun"});
  }
  c.keepalive_ms = f.keepalive_ms;
  c.dead_time_ms = f.dead_time_ms;
  c.drain_timeout_ms = f.drain_timeout_ms;
  if (auto st = hd::validate(c); !st) return hyperscsi::Unexpected(st.error());
  return c;
}

// Logs where a LUN's identity comes from, with a warning when it does not
// follow the data (an initiator then cannot tell this disk from another).
void log_identity(const hd::LunSetting& l, hyperscsi::scsi::LogicalUnit& unit) {
  const hyperscsi::store::StoreIdentity id = unit.store().identity();
  const bool ram = l.store.rfind("ram:", 0) == 0;
  if (ram || id.persistent)
    spdlog::info("LUN {}: identity {} ({}){}", l.number, id.text(), id.source,
                 l.exclusive ? ", exclusive to one session at a time" : "");
  else
    spdlog::warn("LUN {}: identity {} is {}: kept across restarts on this host only", l.number,
                 id.text(), id.source);
}

// "session 0000abcd of 'name' (mac)" for every nexus, from the live sessions.
std::string describe_sessions(const std::vector<hyperscsi::scsi::Nexus>& nexuses,
                              const std::vector<he::SessionReport>& live) {
  std::string out;
  for (const auto& n : nexuses) {
    std::string mac;
    for (const auto& s : live)
      if (s.info.session_id == n.session_id)
        mac = " (" + he::format_mac(s.info.initiator_mac) + ")";
    char id[16];
    std::snprintf(id, sizeof id, "%08llx", static_cast<unsigned long long>(n.session_id));
    out += (out.empty() ? "" : ", ") + std::string("session ") + id + " of '" + n.initiator + "'" +
           mac;
  }
  return out;
}

// Opens every LUN of `c`; the first failure ends the start-up.
hyperscsi::Status<hd::ConfigError> add_luns(he::TargetEngine& engine, const hd::DaemonConfig& c,
                                            const std::vector<hd::LunSetting>& luns) {
  for (const hd::LunSetting& l : luns) {
    auto unit = hd::open_lun(c.target_name, l);
    if (!unit) return hyperscsi::Unexpected(unit.error());
    log_identity(l, *unit.value());
    auto st = engine.add_lun({l.number, std::move(unit).value(), l.access});
    if (!st) return hyperscsi::Unexpected(hd::ConfigError{st.error().message});
  }
  return {};
}

// SIGHUP: applies access lists and LUN additions/removals of the new file.
void reload(he::TargetEngine& engine, hd::DaemonConfig& current, const std::string& path) {
  auto next = hd::load_config_file(path);
  if (!next) {
    spdlog::error("reload: {} (keeping the running configuration)", next.error().message);
    return;
  }
  const hd::DaemonConfig& n = next.value();
  if (n.ports != current.ports || n.target_name != current.target_name)
    spdlog::warn("reload: ports and target name changes need a restart; ignored");
  std::map<uint16_t, const hd::LunSetting*> old_luns, new_luns;
  for (const auto& l : current.luns) old_luns[l.number] = &l;
  for (const auto& l : n.luns) new_luns[l.number] = &l;
  std::vector<hd::LunSetting> applied;
  const std::vector<he::SessionReport> live = engine.sessions();
  std::map<uint16_t, he::LunUsage> reopened;  // what a reopened LUN's successor takes over
  for (const auto& [num, l] : old_luns) {
    auto it = new_luns.find(num);
    const auto usage = engine.lun_usage(num);
    const std::vector<hyperscsi::scsi::Nexus> users =
        usage ? usage->nexuses : std::vector<hyperscsi::scsi::Nexus>{};
    if (it == new_luns.end()) {
      if (!users.empty())
        spdlog::warn("reload: LUN {} removed while in use: {} lose it", num,
                     describe_sessions(users, live));
      engine.remove_lun(num);
    } else if (!l->same_store(*it->second)) {
      spdlog::info("reload: LUN {} store or settings changed, reopening", num);
      // Its successor opens the same file again: wait for the old unit to
      // be flushed and closed (and its lock released).
      if (!engine.remove_lun(num, std::chrono::seconds(10)))
        spdlog::warn("reload: LUN {} still busy after 10 s; reopening may fail", num);
      if (usage) reopened[num] = *usage;
    } else {
      const hyperscsi::engine::AccessList& next_access = it->second->access;
      if (!(l->access == next_access)) {
        std::vector<hyperscsi::scsi::Nexus> revoked;
        for (const auto& user : users) {
          const he::SessionReport* session = nullptr;
          for (const auto& r : live)
            if (r.info.session_id == user.session_id) session = &r;
          if (session &&
              !next_access.admits(session->info.initiator_name, session->info.initiator_mac,
                                  session->info.authenticated, session->info.protection))
            revoked.push_back(user);
        }
        engine.set_access(num, next_access);
        spdlog::info("reload: LUN {} access list updated ({} entries)", num,
                     next_access.entries.size());
        if (!revoked.empty())
          spdlog::warn(
              "reload: LUN {} access revoked for {} that used it; their commands to it now fail "
              "with LOGICAL UNIT NOT SUPPORTED",
              num, describe_sessions(revoked, live));
      }
      applied.push_back(*it->second);
    }
  }
  for (const auto& [num, l] : new_luns) {
    if (engine.has_lun(num)) continue;
    auto unit = hd::open_lun(current.target_name, *l);
    if (!unit) {
      spdlog::error("reload: {}", unit.error().message);
      continue;
    }
    log_identity(*l, *unit.value());
    if (auto prev = reopened.find(num); prev != reopened.end() && !prev->second.nexuses.empty()) {
      const he::LunUsage& old = prev->second;
      hyperscsi::store::BlockStore& store = unit.value()->store();
      const bool same = old.identity.known() && old.identity == store.identity();
      const bool resized =
          old.num_blocks * old.block_size != store.num_blocks() * store.block_size();
      unit.value()->succeed(
          old.nexuses, old.owner,
          same ? hyperscsi::scsi::Succession::kSameData : hyperscsi::scsi::Succession::kOtherData,
          resized);
      if (!same)
        spdlog::warn(
            "reload: LUN {} is another disk now (identity {} was {}): {} that used the old one "
            "lose access to it (their commands fail with LOGICAL UNIT NOT SUPPORTED) until they "
            "log in again",
            num, store.identity().text(), old.identity.text(),
            describe_sessions(old.nexuses, live));
      else if (resized)
        spdlog::info("reload: LUN {} capacity changed from {} to {} bytes: unit attention for {}",
                     num, old.num_blocks * old.block_size, store.num_blocks() * store.block_size(),
                     describe_sessions(old.nexuses, live));
    }
    if (auto st = engine.add_lun({num, std::move(unit).value(), l->access}); !st) {
      spdlog::error("reload: {}", st.error().message);
      continue;
    }
    spdlog::info("reload: LUN {} added ({})", num, l->store);
    applied.push_back(*l);
  }
  current.luns = std::move(applied);
  if (!n.log_level.empty()) spdlog::set_level(spdlog::level::from_str(n.log_level));
  spdlog::info("reload: done, {} LUN(s)", engine.luns().size());
}

// The daemon's interfaces: each claimed (no second target on it), then opened.
struct OpenedPorts {
  std::vector<hd::PortClaim> claims;
  std::vector<std::unique_ptr<hyperscsi::io::Port>> ports;
};

hyperscsi::Result<OpenedPorts, std::string> open_ports(const std::vector<std::string>& specs) {
  OpenedPorts out;
  for (const std::string& spec : specs) {
    auto claim = hd::PortClaim::claim(spec);
    if (!claim) return hyperscsi::Unexpected{claim.error().message};
    out.claims.push_back(std::move(claim).value());
  }
  for (const std::string& spec : specs) {
    auto p = hyperscsi::ports::open_port(spec);
    if (!p)
      return hyperscsi::Unexpected{"port '" + spec +
                                   "': " + std::string(hyperscsi::io::to_string(p.error().kind)) +
                                   ": " + p.error().message};
    out.ports.push_back(std::move(p).value());
  }
  return out;
}

// Serves the control socket and the signals until SIGTERM/SIGINT has drained
// the engine (SIGHUP reloads the config file). Returns the exit code.
int serve_until_stopped(he::TargetEngine& engine, hd::DaemonConfig& config, const Flags& f,
                        hd::ControlServer& control, int sfd) {
  for (;;) {
    pollfd fds[2] = {{sfd, POLLIN, 0}, {control.fd(), POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(std::string("poll: ") + std::strerror(errno));
    }
    if (fds[1].revents & POLLIN) control.serve_one();
    if (!(fds[0].revents & POLLIN)) continue;
    signalfd_siginfo si{};
    if (::read(sfd, &si, sizeof si) != sizeof si) continue;
    if (si.ssi_signo == SIGHUP) {
      if (f.config.empty()) {
        spdlog::info("SIGHUP: no config file to reload (started from flags)");
      } else {
        notify_systemd("RELOADING=1");
        spdlog::info("SIGHUP: reloading {}", f.config);
        reload(engine, config, f.config);
        notify_systemd("READY=1");
      }
    } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      notify_systemd("STOPPING=1");
      spdlog::info("{}: draining", ::strsignal(static_cast<int>(si.ssi_signo)));
      const he::DrainReport r = engine.drain(std::chrono::milliseconds(config.drain_timeout_ms));
      if (!r.completed)
        spdlog::warn("drain incomplete: {} command(s) left, {} session(s) unacknowledged",
                     r.commands_left, r.sessions_unacked);
      if (r.flush_errors) return fail(std::to_string(r.flush_errors) + " LUN flush(es) failed");
      spdlog::info("every LUN flushed; exiting");
      return 0;
    }
  }
}

int run_daemon(const Flags& f) {
  auto cfg = f.config.empty() ? config_from_flags(f) : hd::load_config_file(f.config);
  if (!cfg) return fail(cfg.error().message);
  hd::DaemonConfig config = std::move(cfg).value();
  if (!f.config.empty() && !config.log_level.empty() && !f.log_level_set)
    spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (!f.control.empty()) config.control_path = f.control;
  if (config.control_path.empty())
    config.control_path = hd::default_control_path(config.target_name);

  // Signals are taken through a signalfd: block them before any thread starts.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  const int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));

  auto opened = open_ports(config.ports);
  if (!opened) return fail(opened.error());
  // The claims are held until exit: one target per interface.
  std::vector<hd::PortClaim> claims = std::move(opened->claims);
  std::vector<std::unique_ptr<hyperscsi::io::Port>> ports = std::move(opened->ports);

  he::EngineConfig ec;
  ec.target_name = config.target_name;
  if (config.keepalive_ms) ec.limits.keepalive_ms = config.keepalive_ms;
  if (config.dead_time_ms) ec.limits.dead_time_ms = config.dead_time_ms;
  ec.initiator_secrets = config.initiator_secrets;
  // Several ports: one session may use all of them (an initiator that does
  // not offer MULTIPATH sees the single-port protocol unchanged).
  ec.multipath = config.ports.size() > 1 && config.multipath && !f.no_multipath;
  ec.read_thread = config.read_thread || f.read_thread;
  if (config.ports.size() > 1 && !ec.multipath)
    spdlog::info("multipath not offered: each session stays on the port it logged in on");
  he::TargetEngine engine(ec, std::move(ports));
  if (auto st = add_luns(engine, config, config.luns); !st) return fail(st.error().message);

  hd::ControlServer control;
  auto handler = [&](const std::string& req) -> std::string {
    if (req == "ping") return "pong\n";
    if (req == "stats" || req == "stats json") {
      auto sessions = engine.sessions();
      auto st = engine.stats();
      return req == "stats" ? hd::format_stats_text(config.target_name, sessions, st)
                            : hd::format_stats_json(config.target_name, sessions, st);
    }
    return "error: unknown request '" + req + "'\n";
  };
  if (auto st = control.listen(config.control_path, handler); !st) return fail(st.error());

  if (auto st = engine.start(); !st) return fail(st.error().message);
  spdlog::info("hyperscsi-target {} serving '{}' on {} port(s), {} LUN(s); control {}",
               HYPERSCSI_VERSION, config.target_name, config.ports.size(), engine.luns().size(),
               config.control_path);
  notify_systemd("READY=1");
  return serve_until_stopped(engine, config, f, control, sfd);
}

int run_stats(const std::string& control, const std::string& name, bool json) {
  const std::string path = control.empty()
                               ? hd::default_control_path(name.empty() ? "hyperscsi-target" : name)
                               : control;
  auto r =
      hd::control_request(path, json ? "stats json" : "stats", std::chrono::milliseconds(5000));
  if (!r) {
    std::fprintf(stderr, "hyperscsi-target stats: %s\n", r.error().c_str());
    return 1;
  }
  std::fputs(r.value().c_str(), stdout);
  return r.value().rfind("error", 0) == 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("hyperscsi-target");
  spdlog::set_default_logger(logger);

  CLI::App app{"hyperscsi-target: serves SCSI LUNs over HyperSCSI (raw Ethernet)"};
  app.set_version_flag("--version", std::string("hyperscsi-target ") + HYPERSCSI_VERSION);
  Flags f;
  auto* port_opt = app.add_option(
      "--port", f.ports, "port to serve on: afpacket:IFACE, pcap:IFACE, dpdk:ARGS, mem:NAME");
  auto* lun_opt =
      app.add_option("--lun", f.luns, "N=PATH, N=ram:SIZE or N=rbd:POOL/IMAGE (repeatable)");
  auto* ro_opt =
      app.add_option("--read-only-lun", f.read_only_luns, "export LUN N read-only (repeatable)");
  auto* excl_opt = app.add_option(
      "--exclusive-lun", f.exclusive_luns,
      "LUN N serves one session at a time; others get RESERVATION CONFLICT (repeatable)");
  auto* name_opt = app.add_option("--name", f.name, "target name (default hyperscsi-target)");
  auto* bs_opt = app.add_option("--block-size", f.block_size, "logical block size for --lun")
                     ->check(CLI::IsMember({512, 4096}));
  // How rbd: LUNs reach the Ceph cluster ([ceph] in a config file).
  std::vector<CLI::Option*> ceph_opts = {
      app.add_option("--ceph-conf", f.ceph.conf_file,
                     "Ceph configuration for rbd:POOL/IMAGE LUNs (default /etc/ceph/ceph.conf)"),
      app.add_option("--ceph-id", f.ceph.client_id,
                     "cephx user for rbd: LUNs, without client. (default admin)"),
      app.add_option("--ceph-keyring", f.ceph.keyring,
                     "keyring of that user (default: as ceph.conf says)"),
      app.add_option("--ceph-connect-timeout", f.ceph.connect_timeout_s,
                     "seconds to reach the Ceph monitors at start (default 10; 0: ceph.conf's)")
          ->check(CLI::Range(0, 3600)),
      app.add_option("--ceph-op-timeout", f.ceph.op_timeout_s,
                     "seconds an rbd: I/O waits for a blocked OSD before it fails (default 30; "
                     "0: ceph.conf's, or forever)")
          ->check(CLI::Range(0, 3600))};
  auto* config_opt = app.add_option("--config", f.config, "TOML configuration file");
  config_opt->excludes(port_opt)->excludes(lun_opt);
  for (CLI::Option* o : ceph_opts) config_opt->excludes(o);
  app.add_option("--control", f.control, "control socket (default /run/hyperscsi/NAME.sock)");
  auto* log_opt =
      app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error, critical, off")
          ->check(CLI::IsMember(
              {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"}));
  auto* keepalive_opt =
      app.add_option("--keepalive-ms", f.keepalive_ms, "keepalive interval offered at login");
  auto* dead_opt = app.add_option("--dead-time-ms", f.dead_time_ms,
                                  "silence after which a session is reclaimed");
  auto* drain_opt =
      app.add_option("--drain-timeout-ms", f.drain_timeout_ms, "bound on the drain at SIGTERM");
  // What the file says is not also taken from flags (they were ignored beside
  // --config): an error instead. --control, --log-level and --no-multipath
  // apply on top of the file.
  for (CLI::Option* o : {ro_opt, excl_opt, name_opt, bs_opt, keepalive_opt, dead_opt, drain_opt})
    config_opt->excludes(o);
  app.add_flag("--no-multipath", f.no_multipath,
               "with several ports, do not offer MULTIPATH: each session stays on the port it "
               "logged in on (TOML: target.multipath = false)");
  app.add_flag("--read-thread", f.read_thread,
               "copy large reads of tmpfs-backed LUNs on a thread of their own while a session "
               "has replies queued, so the port loop keeps sending: for a target host with CPUs "
               "to spare (TOML: target.read_thread = true)");

  std::string stats_control, stats_name;
  bool stats_json = false;
  auto* stats = app.add_subcommand("stats", "print the per-session counters of a running daemon");
  stats->add_option("--control", stats_control, "control socket path");
  stats->add_option("--name", stats_name, "target name (socket /run/hyperscsi/NAME.sock)");
  stats->add_flag("--json", stats_json, "JSON output");

  CLI11_PARSE(app, argc, argv);
  f.block_size_set = bs_opt->count() > 0;
  f.log_level_set = log_opt->count() > 0;
  if (f.ceph.client_id.rfind("client.", 0) == 0) f.ceph.client_id.erase(0, 7);
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  if (*stats) return run_stats(stats_control, stats_name, stats_json);
  return run_daemon(f);
}
