// Bounded polling for tests: wait until a condition holds or a limit passes.
// Thread-safety: none of its own; `pred` runs on the calling thread.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace hyperscsi::test_support {

// Polls `pred` every 20 ms until it holds (true) or `limit` passed (false,
// after one last look).
inline bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace hyperscsi::test_support
