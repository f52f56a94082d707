// Result<T, E>: a value or a typed error, for setup paths and decoders.
// C++20 has no std::expected; this is the small subset the project needs.
// Thread-safety: a plain value type.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

namespace hyperscsi {

template <typename E>
struct Unexpected {
  // A constructor rather than aggregate init alone: clang before 16 lacks
  // C++20 parenthesized aggregate init, and the fuzz build uses clang 14.
  Unexpected(E e) : error(std::move(e)) {}  // NOLINT: implicit by design
  E error;
};
template <typename E>
Unexpected(E) -> Unexpected<E>;

template <typename T, typename E>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Unexpected<E> err) : v_(std::in_place_index<1>, std::move(err.error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  const E& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, E> v_;
};

// Result<void, E>: success or a typed error.
template <typename E>
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Unexpected<E> err) : err_(std::move(err.error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const {
    assert(!ok_);
    return err_;
  }

 private:
  E err_{};
  bool ok_ = true;
};

}  // namespace hyperscsi
