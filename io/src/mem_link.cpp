#include "hyperscsi/io/mem_link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "ether.h"
#include "hyperscsi/io/heap_pool.h"

namespace hyperscsi::io {
namespace {

using proto::Duration;
using proto::TimePoint;

PortError bad_argument(std::string msg) {
  return {PortErrorKind::kBadArgument, std::move(msg)};
}

// One direction of the wire: `q` is guarded by `mu`.
struct Direction {
  std::mutex mu;
  std::unique_ptr<ImpairedQueue> q;
  int dst_event_fd = -1;  // the receiving end's eventfd
  bool signalled = false;

  void signal() {
    if (signalled) return;
    const uint64_t one = 1;
    if (::write(dst_event_fd, &one, sizeof one) == sizeof one) signalled = true;
  }
  void unsignal() {
    if (!signalled) return;
    uint64_t v = 0;
    if (::read(dst_event_fd, &v, sizeof v) == sizeof v) signalled = false;
  }
};

struct End {
  MacAddress mac{};
  size_t mtu = 0;
  std::string spec;
  std::unique_ptr<HeapPacketPool> pool;
  int event_fd = -1;
  PortCounters counters;  // touched only by this end's thread
};

std::atomic<uint32_t> g_link_ids{1};

}  // namespace

class MemLinkState {
 public:
  explicit MemLinkState(const MemLinkConfig& cfg) : clock_(cfg.clock), real_clock_(!cfg.clock) {
    if (!clock_) clock_ = [] { return proto::Clock::now(); };
    const uint32_t id = g_link_ids.fetch_add(1);
    for (int s = 0; s < 2; ++s) {
      End& e = ends_[s];
      e.mtu = s == 0 ? cfg.mtu_a : cfg.mtu_b;
      // Locally administered unicast: 02:48:53 ("HS") + link id + side.
      e.mac = {0x02,
               0x48,
               0x53,
               static_cast<uint8_t>(id >> 8),
               static_cast<uint8_t>(id),
               static_cast<uint8_t>(0x0a + s)};
      e.spec = "mem:" + cfg.name;
      e.pool = std::make_unique<HeapPacketPool>(cfg.pool_size, e.mtu);
      e.event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    for (int d = 0; d < 2; ++d) {
      Direction& dir = dirs_[d];
      HeapPacketPool* pool = ends_[d].pool.get();  // duplicates come from the sender's pool
      dir.q = std::make_unique<ImpairedQueue>(
          d == 0 ? cfg.a_to_b : cfg.b_to_a, cfg.seed * 2 + static_cast<uint64_t>(d),
          ends_[1 - d].mtu + detail::kEthHeader, [pool] { return pool->alloc(); });
      dir.dst_event_fd = ends_[1 - d].event_fd;
    }
  }
  ~MemLinkState();
  MemLinkState(const MemLinkState&) = delete;
  MemLinkState& operator=(const MemLinkState&) = delete;

  bool ok() const { return ends_[0].event_fd >= 0 && ends_[1].event_fd >= 0; }

  End& end(int side) { return ends_[side]; }
  Direction& dir_from(int side) { return dirs_[side]; }

  size_t tx(int side, std::span<Packet> pkts);
  size_t rx(int side, std::span<Packet> out);
  bool wait(int side, std::chrono::microseconds timeout);

  std::string registered_name;  // non-empty when open_mem_port registered it

 private:
  std::function<TimePoint()> clock_;
  bool real_clock_;
  std::array<End, 2> ends_;
  std::array<Direction, 2> dirs_;
};

size_t MemLinkState::tx(int side, std::span<Packet> pkts) {
  End& me = ends_[side];
  Direction& d = dirs_[side];
  const TimePoint now = clock_();
  std::lock_guard lock(d.mu);
  d.q->release_due(now);
  for (Packet& pkt : pkts) {
    const size_t len = pkt.size();
    if (!pkt || len < detail::kEthHeader) {
      ++me.counters.tx_errors;
      pkt.reset();
      continue;
    }
    ++me.counters.tx_frames;
    me.counters.tx_bytes += len;
    d.q->offer(std::move(pkt), now);
  }
  if (d.q->in_flight() > 0) d.signal();
  return pkts.size();
}

size_t MemLinkState::rx(int side, std::span<Packet> out) {
  End& me = ends_[side];
  Direction& d = dirs_[1 - side];
  const TimePoint now = clock_();
  std::lock_guard lock(d.mu);
  const size_t n = d.q->take(now, out);
  for (size_t i = 0; i < n; ++i) {
    ++me.counters.rx_frames;
    me.counters.rx_bytes += out[i].size();
  }
  if (d.q->in_flight() == 0) d.unsignal();
  return n;
}

bool MemLinkState::wait(int side, std::chrono::microseconds timeout) {
  Direction& d = dirs_[1 - side];
  TimePoint due = TimePoint::max();
  {
    std::lock_guard lock(d.mu);
    due = d.q->next_due();
  }
  if (due == TimePoint::max()) {  // nothing in flight: sleep on the eventfd
    pollfd p{ends_[side].event_fd, POLLIN, 0};
    const auto ms = (timeout.count() + 999) / 1000;
    return ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 0x7fffffff))) > 0;
  }
  const TimePoint now = clock_();
  if (due <= now) return true;
  // A virtual clock moves only when the test moves it: do not sleep on it.
  if (!real_clock_) return false;
  std::this_thread::sleep_for(std::min<Duration>(due - now, timeout));
  return clock_() >= due;
}

// ---- registry of named links (open_mem_port) ----
namespace {

struct RegistryEntry {
  std::weak_ptr<MemLinkState> state;
  std::unique_ptr<MemPort> pending_b;  // end B until the second open takes it
};

struct Registry {
  std::mutex mu;
  std::map<std::string, RegistryEntry, std::less<>> entries;
};

// Never destroyed: link states may die during static destruction.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

}  // namespace

MemLinkState::~MemLinkState() {
  // Drop queued frames before the pools (they may belong to either pool;
  // pools survive their owners anyway, see heap_pool.h).
  for (auto& d : dirs_)
    if (d.q) d.q->clear();
  for (auto& e : ends_)
    if (e.event_fd >= 0) ::close(e.event_fd);
  if (!registered_name.empty()) {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.entries.find(registered_name);
    if (it != r.entries.end() && it->second.state.expired() && !it->second.pending_b)
      r.entries.erase(it);
  }
}

// ---- MemPort ----
MemPort::MemPort(std::shared_ptr<MemLinkState> link, int side)
    : link_(std::move(link)), side_(side) {}
MemPort::~MemPort() = default;

std::string_view MemPort::spec() const {
  return link_->end(side_).spec;
}
MacAddress MemPort::mac() const {
  return link_->end(side_).mac;
}
size_t MemPort::mtu() const {
  return link_->end(side_).mtu;
}
PortCounters MemPort::counters() const {
  return link_->end(side_).counters;
}
int MemPort::fd() const {
  return link_->end(side_).event_fd;
}
Packet MemPort::alloc() {
  return link_->end(side_).pool->alloc();
}
size_t MemPort::rx_burst(std::span<Packet> out) {
  return link_->rx(side_, out);
}
size_t MemPort::tx_burst(std::span<Packet> pkts) {
  return link_->tx(side_, pkts);
}
bool MemPort::wait_rx(std::chrono::microseconds timeout) {
  return link_->wait(side_, timeout);
}

ImpairmentStats MemPort::tx_link_stats() const {
  Direction& d = link_->dir_from(side_);
  std::lock_guard lock(d.mu);
  return d.q->stats();
}

void MemPort::set_tx_impairment(const Impairment& imp) {
  Direction& d = link_->dir_from(side_);
  std::lock_guard lock(d.mu);
  d.q->set_impairment(imp);
}

namespace {

bool valid_mtu(size_t mtu) {
  return mtu >= 68 && mtu <= 65535;
}

Result<std::shared_ptr<MemLinkState>, PortError> make_state(const MemLinkConfig& cfg) {
  if (!valid_mtu(cfg.mtu_a) || !valid_mtu(cfg.mtu_b))
    return Unexpected(bad_argument("mem link '" + cfg.name + "': mtu must be within 68..65535"));
  if (cfg.pool_size == 0)
    return Unexpected(bad_argument("mem link '" + cfg.name + "': pool_size must be > 0"));
  auto state = std::make_shared<MemLinkState>(cfg);
  if (!state->ok())
    return Unexpected(PortError{PortErrorKind::kBackendFailure,
                                std::string("mem link: eventfd: ") + std::strerror(errno)});
  return state;
}

template <typename T>
bool parse_number(std::string_view s, T& out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && p == end;
}

bool parse_probability(std::string_view s, double& out) {
  return parse_number(s, out) && out >= 0.0 && out <= 1.0;
}

// Applies "key=value,key=value" to `cfg`.
Status<PortError> parse_query(std::string_view query, MemLinkConfig& cfg) {
  Impairment imp;
  size_t mtu = cfg.mtu_a;
  while (!query.empty()) {
    const size_t comma = query.find(',');
    const std::string_view item = query.substr(0, comma);
    query = comma == std::string_view::npos ? std::string_view{} : query.substr(comma + 1);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return Unexpected(bad_argument("mem: option '" + std::string(item) + "' needs a value"));
    const std::string_view key = item.substr(0, eq);
    const std::string_view val = item.substr(eq + 1);
    bool ok = true;
    uint64_t u = 0;
    if (key == "loss") {
      ok = parse_probability(val, imp.loss);
    } else if (key == "dup") {
      ok = parse_probability(val, imp.duplicate);
    } else if (key == "reorder") {
      ok = parse_probability(val, imp.reorder);
    } else if (key == "corrupt") {
      ok = parse_probability(val, imp.corrupt);
    } else if (key == "reorder_gap") {
      ok = parse_number(val, imp.reorder_gap) && imp.reorder_gap > 0;
    } else if (key == "reorder_timeout_us") {
      ok = parse_number(val, u);
      imp.reorder_timeout = std::chrono::microseconds(u);
    } else if (key == "delay_us") {
      ok = parse_number(val, u);
      imp.delay = std::chrono::microseconds(u);
    } else if (key == "jitter_us") {
      ok = parse_number(val, u);
      imp.jitter = std::chrono::microseconds(u);
    } else if (key == "rate_bps") {
      ok = parse_number(val, imp.rate_bps);
    } else if (key == "queue") {
      ok = parse_number(val, imp.queue_limit) && imp.queue_limit > 0;
    } else if (key == "seed") {
      ok = parse_number(val, cfg.seed);
    } else if (key == "mtu") {
      ok = parse_number(val, mtu) && valid_mtu(mtu);
    } else {
      return Unexpected(bad_argument(
          "mem: unknown option '" + std::string(key) +
          "' (valid: mtu, seed, loss, dup, reorder, reorder_gap, reorder_timeout_us, delay_us, "
          "jitter_us, corrupt, rate_bps, queue)"));
    }
    if (!ok)
      return Unexpected(bad_argument("mem: bad value '" + std::string(val) + "' for option '" +
                                     std::string(key) + "'"));
  }
  cfg.mtu_a = cfg.mtu_b = mtu;
  cfg.a_to_b = cfg.b_to_a = imp;
  return {};
}

}  // namespace

Result<MemLink, PortError> make_mem_link(const MemLinkConfig& config) {
  auto state = make_state(config);
  if (!state) return Unexpected(state.error());
  MemLink link;
  link.a = std::make_unique<MemPort>(*state, 0);
  link.b = std::make_unique<MemPort>(*state, 1);
  return link;
}

Result<std::unique_ptr<Port>, PortError> open_mem_port(std::string_view rest,
                                                       const PortOptions& options) {
  const size_t q = rest.find('?');
  const std::string name(rest.substr(0, q));
  if (name.empty())
    return Unexpected(PortError{PortErrorKind::kBadSpec, "mem: missing link name (mem:NAME)"});
  Registry& r = registry();
  std::unique_ptr<MemPort> keep_alive;  // destroyed after the lock is released
  {
    std::lock_guard lock(r.mu);
    auto it = r.entries.find(name);
    if (it != r.entries.end()) {
      if (it->second.pending_b) {
        // Second open: hand out end B (its options were fixed by the first open).
        std::unique_ptr<Port> b = std::move(it->second.pending_b);
        return b;
      }
      if (!it->second.state.expired())
        return Unexpected(bad_argument("mem link '" + name + "' already has both ends open"));
      r.entries.erase(it);
    }
  }
  MemLinkConfig cfg;
  cfg.name = name;
  cfg.pool_size = options.pool_size;
  if (q != std::string_view::npos) {
    auto parsed = parse_query(rest.substr(q + 1), cfg);
    if (!parsed) return Unexpected(parsed.error());
  }
  auto state = make_state(cfg);
  if (!state) return Unexpected(state.error());
  for (int s = 0; s < 2; ++s) (*state)->end(s).spec = "mem:" + std::string(rest);
  (*state)->registered_name = name;
  auto a = std::make_unique<MemPort>(*state, 0);
  auto b = std::make_unique<MemPort>(*state, 1);
  {
    std::lock_guard lock(r.mu);
    auto& entry = r.entries[name];
    if (entry.pending_b || !entry.state.expired()) {
      // Lost a race with another opener of the same name.
      keep_alive = std::move(b);
      return Unexpected(bad_argument("mem link '" + name + "' was opened concurrently"));
    }
    entry.state = *state;
    entry.pending_b = std::move(b);
  }
  std::unique_ptr<Port> out = std::move(a);
  return out;
}

size_t mem_registry_size() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.entries.size();
}

}  // namespace hyperscsi::io
