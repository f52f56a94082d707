#include "control.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "hyperscsi/base/json.h"

namespace hyperscsi::daemon {

namespace {

using base::json_escape;

double us(proto::Duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

bool fill_addr(const std::string& path, sockaddr_un& addr) {
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return false;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

std::string format_stats_text(const std::string& target,
                              const std::vector<engine::SessionReport>& s,
                              const engine::EngineStats& st) {
  std::string out = fmt::format("target {}: {} session(s)\n", target, s.size());
  out += fmt::format(
      "frames received {}, malformed {}, commands executed {}, denied {}, absent {}, busy {}, "
      "replays {}, replies {} (failed {}), logins {} (refused {}), reclaimed {}\n",
      st.frames_received, st.malformed_frames, st.commands_executed, st.commands_denied,
      st.commands_absent, st.commands_busy, st.replays, st.replies_sent, st.replies_failed,
      st.endpoint.logins_accepted, st.endpoint.logins_refused, st.endpoint.sessions_reclaimed);
  out += fmt::format(
      "auth: challenges {}, successes {}, failures {}, replays {}, evicted {}; denied by auth "
      "policy {}; frames dropped: bad tag {}, replayed {}, unprotected {}\n",
      st.endpoint.auth_challenges, st.endpoint.auth_successes, st.endpoint.auth_failures,
      st.endpoint.auth_replays, st.endpoint.auth_evicted, st.commands_unauthenticated,
      st.endpoint.frames_bad_tag, st.endpoint.frames_replayed, st.endpoint.frames_unprotected);
  out += fmt::format(
      "port loops: turns {}, waits {} (holds {}, transmit full {}), wake-ups {}, cpu {:.3f} s, "
      "busy poll 0 s\n",
      st.loop_turns, st.loop_waits, st.loop_holds, st.loop_tx_full_waits, st.loop_wakeups,
      st.loop_cpu_seconds);
  // The stores: what reached the medium and which way (io_uring, an inline
  // copy, the read thread of --read-thread).
  for (const auto& l : st.luns) {
    const store::StoreCounters& c = l.store;
    out += fmt::format(
        "lun {} store: reads {} ({} bytes) writes {} ({} bytes, FUA {}) flushes {} unmaps {} "
        "errors {}; io_uring submits {} ops {} merged {} bounced {}; inline {} (missed {}); "
        "read thread {}\n",
        l.lun, c.reads, c.bytes_read, c.writes, c.bytes_written, c.fua_writes, c.flushes, c.unmaps,
        c.errors, c.batches, c.ops_submitted, c.merged, c.bounced, c.inline_ops, c.inline_misses,
        c.offloaded_reads);
  }
  for (const auto& r : s) {
    const auto& i = r.info;
    out += fmt::format(
        "session {:08x} epoch {} initiator '{}' mac {} port {} {} protection {}\n"
        "  commands {} replies {} bytes in {} out {} frames out {} retransmitted {} "
        "(fast {}, timeouts {}, spurious {}) srtt {:.0f}us rttvar {:.0f}us rto {:.0f}us cwnd {} "
        "ssthresh {} peer window {} "
        "mtu {} replays {}\n",
        i.session_id, i.epoch, i.initiator_name, engine::format_mac(i.initiator_mac), r.port,
        i.authenticated ? "authenticated" : "unauthenticated", proto::to_string(i.protection),
        i.commands, i.replies, i.transport.bytes_received, i.transport.bytes_sent,
        i.transport.frames_sent, i.transport.frames_retransmitted, i.transport.fast_retransmits,
        i.transport.timeouts, i.transport.spurious_timeouts, us(i.transport.srtt),
        us(i.transport.rttvar), us(i.transport.rto), i.transport.cwnd, i.transport.ssthresh,
        i.transport.peer_window, i.negotiated.mtu, i.cache.replays);
    // A multipath session: one line per path (docs/protocol.md 14).
    for (const proto::PathInfo& p : i.paths)
      out += fmt::format(
          "  path {} gen {} {} {} -> {} mtu {} frames out {} in {} retransmitted {} timeouts {} "
          "srtt {:.0f}us failures {} moved off {}\n",
          p.id, p.gen, proto::to_string(p.state), engine::format_mac(p.local),
          engine::format_mac(p.peer), p.mtu, p.counters.frames_sent, p.counters.frames_received,
          p.counters.frames_retransmitted, p.counters.timeouts, us(p.transport.srtt),
          p.counters.failures, p.counters.pdus_moved_off);
  }
  return out;
}

std::string format_stats_json(const std::string& target,
                              const std::vector<engine::SessionReport>& s,
                              const engine::EngineStats& st) {
  std::string out = fmt::format(
      "{{\"target\":\"{}\",\"engine\":{{\"frames_received\":{},\"malformed_frames\":{},"
      "\"commands_executed\":{},\"commands_denied\":{},\"commands_absent\":{},"
      "\"commands_busy\":{},\"replays\":{},\"replies_sent\":{},\"replies_failed\":{},"
      "\"logins_accepted\":{},\"logins_refused\":{},\"sessions_reclaimed\":{},"
      "\"frames_not_for_us\":{},\"handoffs_dropped\":{},\"unknown_session\":{},\"stale_epoch\":{},"
      "\"command_protocol_errors\":{},\"session_malformed\":{},\"frames_ignored\":{},"
      "\"rejections_sent\":{},\"rejections_suppressed\":{},"
      "\"auth_challenges\":{},\"auth_successes\":{},\"auth_failures\":{},\"auth_replays\":{},"
      "\"auth_evicted\":{},\"commands_unauthenticated\":{},\"frames_bad_tag\":{},"
      "\"frames_replayed\":{},\"frames_unprotected\":{},"
      "\"loop_turns\":{},\"loop_waits\":{},\"loop_holds\":{},\"loop_paced_sleeps\":{},"
      "\"loop_tx_full_waits\":{},"
      "\"loop_wakeups\":{},\"loop_cpu_s\":{:.6f},\"busy_poll_s\":0}},",
      json_escape(target), st.frames_received, st.malformed_frames, st.commands_executed,
      st.commands_denied, st.commands_absent, st.commands_busy, st.replays, st.replies_sent,
      st.replies_failed, st.endpoint.logins_accepted, st.endpoint.logins_refused,
      st.endpoint.sessions_reclaimed, st.frames_not_for_us, st.handoffs_dropped,
      st.endpoint.unknown_session, st.endpoint.stale_epoch, st.endpoint.command_protocol_errors,
      st.endpoint.malformed, st.endpoint.frames_ignored, st.endpoint.rejections_sent,
      st.endpoint.rejections_suppressed, st.endpoint.auth_challenges, st.endpoint.auth_successes,
      st.endpoint.auth_failures, st.endpoint.auth_replays, st.endpoint.auth_evicted,
      st.commands_unauthenticated, st.endpoint.frames_bad_tag, st.endpoint.frames_replayed,
      st.endpoint.frames_unprotected, st.loop_turns, st.loop_waits, st.loop_holds,
      st.loop_paced_sleeps, st.loop_tx_full_waits, st.loop_wakeups, st.loop_cpu_seconds);
  out += "\"luns\":[";
  for (size_t n = 0; n < st.luns.size(); ++n) {
    const store::StoreCounters& c = st.luns[n].store;
    out += fmt::format(
        "{}{{\"lun\":{},\"reads\":{},\"bytes_read\":{},\"writes\":{},\"bytes_written\":{},"
        "\"fua_writes\":{},\"flushes\":{},\"unmaps\":{},\"errors\":{},\"batches\":{},"
        "\"ops_submitted\":{},\"merged\":{},\"bounced\":{},\"inline_ops\":{},"
        "\"inline_misses\":{},\"offloaded_reads\":{},\"write_sames\":{},"
        "\"compare_and_writes\":{}}}",
        n == 0 ? "" : ",", st.luns[n].lun, c.reads, c.bytes_read, c.writes, c.bytes_written,
        c.fua_writes, c.flushes, c.unmaps, c.errors, c.batches, c.ops_submitted, c.merged,
        c.bounced, c.inline_ops, c.inline_misses, c.offloaded_reads, c.write_sames,
        c.compare_and_writes);
  }
  out += "],\"sessions\":[";
  bool first = true;
  for (const auto& r : s) {
    const auto& i = r.info;
    out += first ? "" : ",";
    first = false;
    out += fmt::format(
        "{{\"session_id\":{},\"epoch\":{},\"initiator\":\"{}\",\"mac\":\"{}\",\"port\":\"{}\","
        "\"commands\":{},\"replies\":{},\"bytes_in\":{},\"bytes_out\":{},\"frames_sent\":{},"
        "\"retransmissions\":{},\"fast_retransmits\":{},\"timeouts\":{},"
        "\"spurious_timeouts\":{},\"srtt_us\":{:.1f},\"rttvar_us\":{:.1f},"
        "\"rto_us\":{:.1f},\"cwnd\":{},\"ssthresh\":{},\"peer_window\":{},\"mtu\":{},"
        "\"replays\":{},"
        "\"duplicates_received\":{},\"out_of_window\":{},"
        "\"authenticated\":{},\"protection\":\"{}\",\"paths\":[",
        i.session_id, i.epoch, json_escape(i.initiator_name), engine::format_mac(i.initiator_mac),
        json_escape(r.port), i.commands, i.replies, i.transport.bytes_received,
        i.transport.bytes_sent, i.transport.frames_sent, i.transport.frames_retransmitted,
        i.transport.fast_retransmits, i.transport.timeouts, i.transport.spurious_timeouts,
        us(i.transport.srtt), us(i.transport.rttvar), us(i.transport.rto), i.transport.cwnd,
        i.transport.ssthresh, i.transport.peer_window, i.negotiated.mtu, i.cache.replays,
        i.transport.duplicates_received, i.transport.out_of_window, i.authenticated,
        proto::to_string(i.protection));
    bool first_path = true;
    for (const proto::PathInfo& p : i.paths) {
      out += first_path ? "" : ",";
      first_path = false;
      out += fmt::format(
          "{{\"id\":{},\"gen\":{},\"state\":\"{}\",\"local\":\"{}\",\"peer\":\"{}\","
          "\"mtu\":{},\"frames_sent\":{},\"frames_received\":{},\"retransmissions\":{},"
          "\"timeouts\":{},\"srtt_us\":{:.1f},\"failures\":{},\"pdus_moved_off\":{}}}",
          p.id, p.gen, proto::to_string(p.state), engine::format_mac(p.local),
          engine::format_mac(p.peer), p.mtu, p.counters.frames_sent, p.counters.frames_received,
          p.counters.frames_retransmitted, p.counters.timeouts, us(p.transport.srtt),
          p.counters.failures, p.counters.pdus_moved_off);
    }
    out += "]}";
  }
  out += "]}\n";
  return out;
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

Status<std::string> ControlServer::listen(const std::string& path, Handler handler) {
  sockaddr_un addr;
  if (!fill_addr(path, addr)) return Unexpected("control socket path '" + path + "' is too long");
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  // A socket left by a crashed daemon: replace it if nobody answers on it.
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) return Unexpected("'" + path + "' exists and is not a socket");
    if (control_request(path, "ping", std::chrono::milliseconds(200)).ok())
      return Unexpected("another daemon answers on control socket '" + path + "'");
    ::unlink(path.c_str());
  }
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return Unexpected(std::string("socket: ") + std::strerror(errno));
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 8) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    return Unexpected("control socket '" + path + "': " + why);
  }
  path_ = path;
  handler_ = std::move(handler);
  return {};
}

void ControlServer::serve_one() {
  const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return;
  set_timeouts(c, std::chrono::milliseconds(1000));
  std::string request;
  char buf[256];
  while (request.size() < 256 && request.find('\n') == std::string::npos) {
    const ssize_t n = ::read(c, buf, sizeof buf);
    if (n <= 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  if (auto nl = request.find('\n'); nl != std::string::npos) request.resize(nl);
  const std::string answer = handler_ ? handler_(request) : std::string("error\n");
  size_t off = 0;
  while (off < answer.size()) {
    const ssize_t n = ::send(c, answer.data() + off, answer.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::close(c);
}

Result<std::string, std::string> control_request(const std::string& path,
                                                 const std::string& request,
                                                 std::chrono::milliseconds timeout) {
  sockaddr_un addr;
  if (!fill_addr(path, addr)) return Unexpected("control socket path '" + path + "' is too long");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unexpected(std::string("socket: ") + std::strerror(errno));
  set_timeouts(fd, timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Unexpected("cannot connect to control socket '" + path + "': " + why);
  }
  const std::string line = request + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    return Unexpected(std::string("send: ") + std::strerror(errno));
  }
  std::string answer;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return Unexpected("reading the answer: " + why);
    }
    if (n == 0) break;
    answer.append(buf, static_cast<size_t>(n));
    if (answer.size() > (16u << 20)) break;
  }
  ::close(fd);
  return answer;
}

}  // namespace hyperscsi::daemon
