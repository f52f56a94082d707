// Result<T, E> lives in base/ (hyperscsi/base/result.h); this name stays for
// the code that includes it from here.
#pragma once

#include "hyperscsi/base/result.h"
