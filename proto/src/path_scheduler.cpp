#include "hyperscsi/proto/path_scheduler.h"

#include <algorithm>
#include <chrono>

namespace hyperscsi::proto {
namespace {
constexpr Duration kMinInterval = milliseconds(20);
}  // namespace

Duration expected_service_time(const PathLoad& p, size_t bytes) {
  const double rate = p.rate > 1.0 ? p.rate : 1.0;
  const double secs = static_cast<double>(p.backlog_bytes + bytes) / rate;
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(secs)) + p.one_way;
}

void rank_paths(std::span<const PathLoad> paths, size_t bytes, std::vector<size_t>& out) {
  out.clear();
  double best_rate = 0;
  Duration best_one_way = Duration::max();
  for (size_t i = 0; i < paths.size(); ++i) {
    if (!paths[i].usable) continue;
    out.push_back(i);
    best_rate = std::max(best_rate, paths[i].rate);
    best_one_way = std::min(best_one_way, paths[i].one_way);
  }
  const auto hopeful = [&](size_t i) { return paths[i].retry_due && paths[i].backlog_bytes == 0; };
  const auto service_time = [&](size_t i) {
    if (!hopeful(i)) return expected_service_time(paths[i], bytes);
    PathLoad p = paths[i];
    p.rate = best_rate;
    p.one_way = best_one_way;
    return expected_service_time(p, bytes);
  };
  std::sort(out.begin(), out.end(), [&](size_t a, size_t b) {
    const Duration ea = service_time(a);
    const Duration eb = service_time(b);
    if (ea != eb) return ea < eb;
    if (hopeful(a) != hopeful(b)) return hopeful(a);
    if (paths[a].backlog_bytes != paths[b].backlog_bytes)
      return paths[a].backlog_bytes < paths[b].backlog_bytes;
    return paths[a].id < paths[b].id;
  });
}

void DeliveryRate::on_poll(TimePoint now, uint64_t bytes_acked, bool backlogged, Duration srtt) {
  if (!started_) {
    restart(now, bytes_acked);
    return;
  }
  backlogged_throughout_ = backlogged_throughout_ && backlogged;
  const Duration elapsed = now - start_;
  if (elapsed < std::max(kMinInterval, srtt)) return;
  const double sample = static_cast<double>(bytes_acked - start_bytes_) /
                        std::chrono::duration<double>(elapsed).count();
  // Application-limited: a lower bound on capacity, news only if higher.
  if (backlogged_throughout_ || sample > rate_) add(sample);
  start_ = now;
  start_bytes_ = bytes_acked;
  backlogged_throughout_ = backlogged;
}

void DeliveryRate::add(double sample) {
  samples_[count_ % kSamples] = sample;
  ++count_;
  const size_t n = std::min(count_, kSamples);
  rate_ = *std::max_element(samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(n));
}

void DeliveryRate::restart(TimePoint now, uint64_t bytes_acked) {
  started_ = true;
  start_ = now;
  start_bytes_ = bytes_acked;
  backlogged_throughout_ = true;
}

}  // namespace hyperscsi::proto
