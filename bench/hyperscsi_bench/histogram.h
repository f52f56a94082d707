// Latency histogram with logarithmic buckets (HDR-like): each power of two is
// split into 32 linear sub-buckets, so a percentile is within ~3% of the true
// value, in constant memory. Not thread-safe: the caller serialises.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace hyperscsi::bench {

class LatencyHistogram {
 public:
  void record(uint64_t ns) {
    ++counts_[index(ns)];
    ++total_;
  }
  uint64_t count() const { return total_; }
  // The value at quantile q (0..1), in nanoseconds (bucket upper bound); 0 if empty.
  uint64_t quantile(double q) const {
    if (total_ == 0) return 0;
    uint64_t rank = uint64_t(q * double(total_));
    if (rank >= total_) rank = total_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) return upper(i);
    }
    return upper(counts_.size() - 1);
  }

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr unsigned kSub = 1u << kSubBits;
  static size_t index(uint64_t v) {
    if (v < kSub) return size_t(v);
    const unsigned msb = 63u - unsigned(std::countl_zero(v));
    const unsigned shift = msb - kSubBits;
    return size_t((shift + 1) * kSub + ((v >> shift) - kSub));
  }
  static uint64_t upper(size_t i) {
    if (i < kSub) return i;
    const unsigned shift = unsigned(i / kSub) - 1;
    const uint64_t sub = i % kSub + kSub;
    return ((sub + 1) << shift) - 1;
  }
  std::array<uint64_t, (64 - kSubBits + 1) * kSub> counts_{};
  uint64_t total_ = 0;
};

}  // namespace hyperscsi::bench
