#include "workload.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

#include "pattern.h"

namespace hyperscsi::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Aligned buffers so that O_DIRECT files and devices accept them.
struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, AlignedFree>;

struct Slot {
  Buffer buffer;
  IoRequest request;
  Clock::time_point started;
  uint64_t chunk = 0;
  std::optional<uint64_t> generation;  // written, or expected on read (empty: unknown)
};

// Shared with the completions so that a late completion (after a timed-out
// drain) still finds live state.
class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(Transport& t, const WorkloadConfig& c) : transport_(t), config_(c), rng_(c.seed) {
    const uint64_t region = c.region ? std::min(c.region, t.size_bytes()) : t.size_bytes();
    chunks_ = region / c.bs;
    if (c.verify) {
      generation_.assign(chunks_, 0);
      busy_.assign(chunks_, 0);
    }
    // Generations differ between runs (time-based) so that stale data from an
    // earlier run is never mistaken for this run's writes.
    next_generation_ = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
    slots_.resize(c.qd);
    for (auto& s : slots_)
      s.buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, (c.bs + 4095) / 4096 * 4096)));
  }

  WorkloadResult run(const Progress& progress) {
    begin_ = Clock::now();
    end_ = begin_;
    last_completion_ = begin_;
    deadline_ = config_.duration.count() ? begin_ + config_.duration : Clock::time_point::max();
    for (size_t i = 0; i < slots_.size(); ++i) {
      bool go = false;
      {
        std::lock_guard lock(mu_);
        go = prepare_locked(i);
        if (go) ++in_flight_;
      }
      if (go) issue(i);
    }
    auto next_progress = begin_ + std::chrono::seconds(1);
    // Bounded drain: I/Os still out 30 s after the deadline are given up.
    const auto give_up_after = std::chrono::seconds(30);
    std::unique_lock lock(mu_);
    for (;;) {
      if (in_flight_ == 0) break;
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      const auto now = Clock::now();
      if (in_flight_ && stopping_since_ && now - *stopping_since_ > give_up_after) {
        result_.drained = false;
        break;
      }
      if (!stopping_since_ && (now >= deadline_ || stop_)) stopping_since_ = now;
      if (progress && now >= next_progress) {
        WorkloadResult snapshot = result_;
        lock.unlock();
        progress(snapshot, std::chrono::duration<double>(now - begin_).count());
        lock.lock();
        next_progress += std::chrono::seconds(1);
      }
    }
    stop_ = true;
    result_.seconds = std::chrono::duration<double>(end_ - begin_).count();
    if (!result_.drained)
      result_.seconds = std::chrono::duration<double>(Clock::now() - begin_).count();
    return result_;
  }

 private:
  // Picks the next chunk; in verify mode skips chunks with an I/O in flight.
  uint64_t pick_chunk() {
    uint64_t c = config_.random ? rng_() % chunks_ : seq_++ % chunks_;
    if (config_.verify) {
      for (uint64_t tries = 0; busy_[c] && tries < chunks_; ++tries) c = (c + 1) % chunks_;
    }
    return c;
  }

  // Under mu_: chooses the slot's next I/O; false when the run is over. The
  // slot stays counted in in_flight_ from its completion to its next issue,
  // so that the count never drops to zero between two I/Os of a live run.
  bool prepare_locked(size_t index) {
    Slot& s = slots_[index];
    const bool bytes_done = config_.bytes && issued_bytes_ >= config_.bytes;
    if (stop_ || bytes_done || Clock::now() >= deadline_) {
      stop_ = true;
      return false;
    }
    s.chunk = pick_chunk();
    bool write = (rng_() % 100) >= config_.read_pct;
    s.generation.reset();
    if (config_.verify) {
      busy_[s.chunk] = 1;
      // Mixed verify runs read only what they wrote; pure reads accept any
      // generation an earlier verify run left.
      if (!write && config_.read_pct < 100 && generation_[s.chunk] == 0) write = true;
      if (write)
        s.generation = ++next_generation_;
      else if (generation_[s.chunk] != 0)
        s.generation = generation_[s.chunk];
    }
    s.request = IoRequest{write, s.chunk * config_.bs, config_.bs, s.buffer.get()};
    issued_bytes_ += config_.bs;
    return true;
  }

  // Outside mu_: fills the pattern and submits the prepared I/O.
  void issue(size_t index) {
    Slot& s = slots_[index];
    if (s.request.write && config_.verify)
      fill_pattern({s.buffer.get(), config_.bs}, s.request.offset / kPatternSector, *s.generation);
    s.started = Clock::now();
    transport_.submit(s.request, [self = shared_from_this(), index](bool ok, const std::string& e) {
      self->complete(index, ok, e);
    });
  }

  void complete(size_t index, bool ok, const std::string& error) {
    Slot& s = slots_[index];
    const auto now = Clock::now();
    PatternCheck check;
    if (ok && config_.verify && !s.request.write)
      check = check_pattern({s.buffer.get(), config_.bs}, s.request.offset / kPatternSector,
                            s.generation);
    bool again = false;
    {
      std::lock_guard lock(mu_);
      end_ = now;
      if (config_.verify) {
        busy_[s.chunk] = 0;
        if (s.request.write) generation_[s.chunk] = ok ? *s.generation : 0;
      }
      if (!ok) {
        if (result_.errors++ == 0) result_.first_error = error;
        stop_ = true;  // a failing transport would otherwise spin
      } else {
        result_.latency.record(uint64_t(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - s.started).count()));
        (s.request.write ? result_.writes : result_.reads) += 1;
        result_.bytes += s.request.length;
        if (now <= deadline_ && now >= begin_ + config_.warmup)
          result_.bytes_in_time += s.request.length;
        if (now <= deadline_) {
          result_.longest_gap_s = std::max(
              result_.longest_gap_s, std::chrono::duration<double>(now - last_completion_).count());
          last_completion_ = now;
          if (config_.mark.count() > 0)
            (now < begin_ + config_.mark ? result_.bytes_before_mark : result_.bytes_after_mark) +=
                s.request.length;
        }
        if (!check.ok && result_.mismatches++ == 0) result_.first_mismatch = check.problem;
      }
      again = prepare_locked(index);
      if (!again && --in_flight_ == 0) cv_.notify_all();
    }
    if (again) issue(index);
  }

  Transport& transport_;
  const WorkloadConfig config_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;
  uint64_t chunks_ = 0;
  uint64_t seq_ = 0;
  std::vector<uint64_t> generation_;  // per chunk, 0: not written in this run
  std::vector<uint8_t> busy_;
  uint64_t next_generation_ = 0;
  std::vector<Slot> slots_;
  uint64_t issued_bytes_ = 0;
  uint32_t in_flight_ = 0;
  bool stop_ = false;
  std::optional<Clock::time_point> stopping_since_;
  Clock::time_point begin_, end_, deadline_, last_completion_;
  WorkloadResult result_;
};

}  // namespace

std::string validate(const WorkloadConfig& c, const Transport& t) {
  const uint32_t block = t.block_size();
  if (c.bs < 512 || c.bs > (1u << 20)) return "--bs must be 512 B .. 1 MiB";
  if (block == 0 || c.bs % block != 0)
    return "--bs " + std::to_string(c.bs) + " is not a multiple of the block size " +
           std::to_string(block);
  if (c.qd < 1 || c.qd > 256) return "--qd must be 1..256";
  if (c.read_pct > 100) return "--read-pct must be 0..100";
  const uint64_t region = c.region ? std::min(c.region, t.size_bytes()) : t.size_bytes();
  if (region / c.bs == 0) return "the device is smaller than one --bs block";
  if (c.verify && region / c.bs < c.qd)
    return "--verify needs at least --qd chunks of --bs in the region";
  return {};
}

WorkloadResult run_workload(Transport& transport, const WorkloadConfig& config,
                            const Progress& progress) {
  auto engine = std::make_shared<Engine>(transport, config);
  return engine->run(progress);
}

}  // namespace hyperscsi::bench
