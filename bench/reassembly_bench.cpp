// placeholder: filled in by its module work
#include <benchmark/benchmark.h>
