// Invariant checks for the libFuzzer harnesses: a violated invariant prints
// what broke and aborts, so libFuzzer records the input as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                                 \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "invariant violated at %s:%d: %s (%s)\n", __FILE__, __LINE__, what, \
                   #cond);                                                                     \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)
