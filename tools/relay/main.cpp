// hyperscsi-relay: bridges two ports and impairs the HyperSCSI frames passing
// between them (loss, duplication, reordering, delay, jitter, corruption, rate
// limit) by seeded rules, for chaos tests on kernels without netem. The relay
// is transparent: frames are forwarded unchanged (MACs included) unless a rule
// says otherwise. One thread polls both ports; the poll timeout is the next
// time a delayed frame becomes due. SIGINT/SIGTERM (or --duration) end it; the
// per-direction statistics are printed on stdout as "a->b key=value ..." lines.
//
// The global flags (--loss, --delay-us ...) set both directions; --a2b and
// --b2a then override single keys for one direction, e.g.
//   --loss 0.01 --a2b loss=5%,dup=2% --b2a delay=20ms,rate=100mbit
#include <poll.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "hyperscsi/io/impairment.h"
#include "hyperscsi/io/port.h"
#include "hyperscsi/ports/open_port.h"
#include "hyperscsi/proto/clock.h"

namespace {

using hyperscsi::io::ImpairedQueue;
using hyperscsi::io::Impairment;
using hyperscsi::io::ImpairmentStats;
using hyperscsi::io::Packet;
using hyperscsi::io::Port;
using hyperscsi::proto::Clock;
using hyperscsi::proto::TimePoint;

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

// "1gbit", "100mbit", "500kbit", "64000" (bits per second).
bool parse_rate(const std::string& s, uint64_t& out) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return false;
  }
  const std::string unit = s.substr(pos);
  uint64_t mul = 1;
  if (unit.empty() || unit == "bit")
    mul = 1;
  else if (unit == "kbit")
    mul = 1000;
  else if (unit == "mbit")
    mul = 1000 * 1000;
  else if (unit == "gbit")
    mul = 1000 * 1000 * 1000;
  else
    return false;
  if (v > UINT64_MAX / mul) return false;
  out = v * mul;
  return true;
}

// "5%" or "0.05": a probability in [0, 1].
bool parse_probability(const std::string& s, double& out) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    return false;
  }
  const std::string unit = s.substr(pos);
  if (unit == "%")
    v /= 100;
  else if (!unit.empty())
    return false;
  if (!(v >= 0 && v <= 1)) return false;
  out = v;
  return true;
}

// "20ms", "500us", "1s", "250" (microseconds).
bool parse_duration(const std::string& s, std::chrono::microseconds& out) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return false;
  }
  const std::string unit = s.substr(pos);
  uint64_t mul = 1;
  if (unit.empty() || unit == "us")
    mul = 1;
  else if (unit == "ms")
    mul = 1000;
  else if (unit == "s")
    mul = 1000 * 1000;
  else
    return false;
  if (v > UINT64_MAX / mul / 1000) return false;  // keeps nanoseconds in range
  out = std::chrono::microseconds(static_cast<int64_t>(v * mul));
  return true;
}

bool parse_count(const std::string& s, uint64_t lo, uint64_t hi, uint64_t& out) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return false;
  }
  if (pos != s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

// Applies "key=value,key=value" rules on top of `imp`; returns an error
// message, empty on success.
std::string apply_rules(const std::string& rules, Impairment& imp) {
  size_t start = 0;
  while (start <= rules.size()) {
    const size_t comma = std::min(rules.find(',', start), rules.size());
    const std::string item = rules.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return "'" + item + "': expected key=value";
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    std::chrono::microseconds d{};
    uint64_t n = 0;
    bool ok = true;
    if (key == "loss") {
      ok = parse_probability(value, imp.loss);
    } else if (key == "dup") {
      ok = parse_probability(value, imp.duplicate);
    } else if (key == "reorder") {
      ok = parse_probability(value, imp.reorder);
    } else if (key == "corrupt") {
      ok = parse_probability(value, imp.corrupt);
    } else if (key == "gap") {
      ok = parse_count(value, 1, 1000000, n);
      if (ok) imp.reorder_gap = static_cast<uint32_t>(n);
    } else if (key == "reorder-timeout" || key == "delay" || key == "jitter") {
      ok = parse_duration(value, d);
      if (ok) (key == "delay" ? imp.delay : key == "jitter" ? imp.jitter : imp.reorder_timeout) = d;
    } else if (key == "rate") {
      ok = parse_rate(value, imp.rate_bps);
    } else if (key == "queue") {
      ok = parse_count(value, 1, uint64_t{1} << 24, n);
      if (ok) imp.queue_limit = static_cast<size_t>(n);
    } else {
      return "unknown key '" + key +
             "' (loss, dup, reorder, gap, reorder-timeout, delay, jitter, corrupt, rate, queue)";
    }
    if (!ok) return "bad value in '" + item + "'";
  }
  return {};
}

void print_stats(const char* name, const ImpairmentStats& s, uint64_t tx_dropped) {
  std::printf(
      "%s offered=%llu delivered=%llu lost=%llu duplicated=%llu reordered=%llu corrupted=%llu "
      "queue_drops=%llu mtu_drops=%llu filtered=%llu tx_dropped=%llu\n",
      name, static_cast<unsigned long long>(s.offered),
      static_cast<unsigned long long>(s.delivered), static_cast<unsigned long long>(s.lost),
      static_cast<unsigned long long>(s.duplicated), static_cast<unsigned long long>(s.reordered),
      static_cast<unsigned long long>(s.corrupted), static_cast<unsigned long long>(s.queue_drops),
      static_cast<unsigned long long>(s.mtu_drops), static_cast<unsigned long long>(s.filtered),
      static_cast<unsigned long long>(tx_dropped));
}

// The command line, as parsed.
struct Args {
  std::string spec_a, spec_b, rate = "0";
  Impairment imp;
  uint64_t delay_us = 0, jitter_us = 0, reorder_timeout_us = 1000, seed = 1;
  double duration_s = 0;
  std::array<std::string, 2> rules;
};

void add_options(CLI::App& app, Args& a) {
  Impairment& imp = a.imp;
  app.add_option("--a", a.spec_a, "first port, e.g. afpacket:r0")->required();
  app.add_option("--b", a.spec_b, "second port, e.g. afpacket:r1")->required();
  app.add_option("--loss", imp.loss, "drop probability per frame")->check(CLI::Range(0.0, 1.0));
  app.add_option("--dup", imp.duplicate, "duplicate probability")->check(CLI::Range(0.0, 1.0));
  app.add_option("--reorder", imp.reorder, "hold-back probability")->check(CLI::Range(0.0, 1.0));
  app.add_option("--reorder-gap", imp.reorder_gap, "held frame released after this many")
      ->check(CLI::Range(1u, 1000000u));
  app.add_option("--reorder-timeout-us", a.reorder_timeout_us, "... or after this long");
  app.add_option("--corrupt", imp.corrupt, "bit-flip probability")->check(CLI::Range(0.0, 1.0));
  app.add_option("--delay-us", a.delay_us, "fixed one-way delay");
  app.add_option("--jitter-us", a.jitter_us, "extra uniform delay in [0, jitter]");
  app.add_option("--rate", a.rate, "rate limit: N[bit|kbit|mbit|gbit] per second, 0 = none");
  app.add_option("--queue", imp.queue_limit, "frames in flight per direction")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  app.add_option("--seed", a.seed, "random seed (direction a->b uses 2*seed, b->a 2*seed+1)");
  app.add_option("--a2b", a.rules[0],
                 "rules for frames from --a to --b only, over the global flags: "
                 "key=value,... with loss|dup|reorder|corrupt=P (0.05 or 5%), gap=N, "
                 "reorder-timeout|delay|jitter=T (us, ms, s), rate=R, queue=N");
  app.add_option("--b2a", a.rules[1], "the same for frames from --b to --a");
  app.add_option("--duration", a.duration_s, "stop after this many seconds (0: until a signal)")
      ->check(CLI::NonNegativeNumber);
}

// Each direction's impairment: the global flags, then its own rules.
// nullopt (the error printed) when a value is bad.
std::optional<std::array<Impairment, 2>> direction_impairments(Args& a) {
  Impairment& imp = a.imp;
  if (!parse_rate(a.rate, imp.rate_bps)) {
    std::fprintf(stderr, "hyperscsi-relay: bad --rate '%s' (e.g. 1gbit, 100mbit, 64000)\n",
                 a.rate.c_str());
    return std::nullopt;
  }
  imp.delay = std::chrono::microseconds(a.delay_us);
  imp.jitter = std::chrono::microseconds(a.jitter_us);
  imp.reorder_timeout = std::chrono::microseconds(a.reorder_timeout_us);
  std::array<Impairment, 2> dir_imp{imp, imp};
  for (int d = 0; d < 2; ++d) {
    const std::string err = apply_rules(a.rules[d], dir_imp[d]);
    if (!err.empty()) {
      std::fprintf(stderr, "hyperscsi-relay: --%s: %s\n", d == 0 ? "a2b" : "b2a", err.c_str());
      return std::nullopt;
    }
  }
  return dir_imp;
}

// Opens both ports (each must have a pollable fd); false with the error
// printed.
bool open_ports(const std::array<std::string, 2>& specs,
                std::array<std::unique_ptr<Port>, 2>& ports) {
  for (int i = 0; i < 2; ++i) {
    auto p = hyperscsi::ports::open_port(specs[i]);
    if (!p) {
      std::fprintf(stderr, "hyperscsi-relay: cannot open '%s': %s\n", specs[i].c_str(),
                   p.error().message.c_str());
      return false;
    }
    ports[i] = std::move(*p);
    if (ports[i]->fd() < 0) {
      std::fprintf(stderr, "hyperscsi-relay: '%s' is a poll-mode port; need a pollable fd\n",
                   specs[i].c_str());
      return false;
    }
  }
  return true;
}

using Ports = std::array<std::unique_ptr<Port>, 2>;
using Queues = std::array<std::unique_ptr<ImpairedQueue>, 2>;  // [d]: from port d to 1-d

// Sleeps until a port is readable or a delayed frame is due (at most 100 ms).
void wait_for_work(const Ports& ports, const Queues& queues) {
  const TimePoint now = Clock::now();
  TimePoint due = std::min(queues[0]->next_due(), queues[1]->next_due());
  // ppoll: microsecond delays must not be rounded up to poll()'s milliseconds.
  std::chrono::nanoseconds wait = std::chrono::milliseconds(100);
  if (due != TimePoint::max()) wait = std::min<std::chrono::nanoseconds>(wait, due - now);
  if (wait.count() < 0) wait = std::chrono::nanoseconds(0);
  const timespec ts{static_cast<time_t>(wait.count() / 1000000000),
                    static_cast<long>(wait.count() % 1000000000)};
  std::array<pollfd, 2> fds{pollfd{ports[0]->fd(), POLLIN, 0}, pollfd{ports[1]->fd(), POLLIN, 0}};
  ::ppoll(fds.data(), fds.size(), &ts, nullptr);  // EINTR: loop re-checks g_stop
}

// Offers what each port received to its direction's queue.
void take_in(const Ports& ports, const Queues& queues, std::array<Packet, 64>& burst,
             TimePoint now) {
  for (int d = 0; d < 2; ++d) {
    // Bounded per iteration so one busy direction cannot starve the other.
    for (int round = 0; round < 16; ++round) {
      const size_t n = ports[d]->rx_burst(burst);
      if (n == 0) break;
      queues[d]->release_due(now);
      for (size_t i = 0; i < n; ++i) {
        if (burst[i].size() < 14) {
          burst[i].reset();
          continue;
        }
        queues[d]->offer(std::move(burst[i]), now);
      }
    }
  }
}

// Sends what each queue releases now on the other port; counts what the
// port did not take.
void send_out(const Ports& ports, const Queues& queues, std::array<Packet, 64>& burst,
              TimePoint now, std::array<uint64_t, 2>& tx_dropped) {
  for (int d = 0; d < 2; ++d) {
    for (;;) {
      const size_t n = queues[d]->take(now, burst);
      if (n == 0) break;
      const size_t sent = ports[1 - d]->tx_burst(std::span<Packet>(burst.data(), n));
      tx_dropped[d] += n - std::min(n, sent);
      for (size_t i = 0; i < n; ++i) burst[i].reset();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hyperscsi-relay: a fault-injecting bridge between two ports"};
  Args args;
  add_options(app, args);
  CLI11_PARSE(app, argc, argv);

  const std::optional<std::array<Impairment, 2>> dir_imp = direction_impairments(args);
  if (!dir_imp) return 2;

  Ports ports;
  if (!open_ports({args.spec_a, args.spec_b}, ports)) return 1;
  Queues queues;
  for (int d = 0; d < 2; ++d) {
    Port* src = ports[d].get();
    queues[d] =
        std::make_unique<ImpairedQueue>((*dir_imp)[d], args.seed * 2 + static_cast<uint64_t>(d),
                                        ports[1 - d]->mtu() + 14, [src] { return src->alloc(); });
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Both sockets are bound: frames sent from now on are relayed. Scripts and
  // tests wait for this line instead of guessing how long start-up takes.
  std::fprintf(stderr, "hyperscsi-relay: ready, relaying %s <-> %s\n", args.spec_a.c_str(),
               args.spec_b.c_str());
  std::fflush(stderr);

  const TimePoint end = args.duration_s > 0
                            ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(args.duration_s))
                            : TimePoint::max();
  std::array<uint64_t, 2> tx_dropped{0, 0};
  std::array<Packet, 64> burst;
  while (!g_stop) {
    if (Clock::now() >= end) break;
    wait_for_work(ports, queues);
    const TimePoint now = Clock::now();
    take_in(ports, queues, burst, now);
    send_out(ports, queues, burst, now, tx_dropped);
  }
  print_stats("a->b", queues[0]->stats(), tx_dropped[0]);
  print_stats("b->a", queues[1]->stats(), tx_dropped[1]);
  std::fflush(stdout);
  return 0;
}
