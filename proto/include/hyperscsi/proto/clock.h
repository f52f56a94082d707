// Time as the protocol library sees it: callers pass `now` explicitly, so tests
// can drive every timer with a virtual clock. Nothing in proto/ reads a clock.
#pragma once

#include <chrono>

namespace hyperscsi::proto {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = std::chrono::nanoseconds;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A deadline that never fires.
inline constexpr TimePoint kNever = TimePoint::max();

}  // namespace hyperscsi::proto
