// MetadataValue: one typed value of checkpoint metadata (a GGUF key/value, or a config.json
// entry converted to the same model).
//
// The type system is GGUF's: eight integer widths, f32/f64, bool, UTF-8 string and homogeneous
// arrays (whose elements may themselves be arrays). config.json values map onto it as
// integer -> i64 (u64 above INT64_MAX), real -> f64, bool, string, arrays of those.
//
// Storage is compact on purpose, because the values come from untrusted files: a scalar array
// keeps its elements as packed little-endian bytes (exactly as many bytes as the file spent on
// them), string arrays keep std::strings, nested arrays keep MetadataValues. Readers therefore
// never allocate much more than the input they were given.
//
// Accessors are typed and return errors instead of converting silently: AsInt accepts every
// integer type (failing for u64 values above INT64_MAX), AsFloat accepts floats and integers,
// AsBool only bool, AsString only string. Immutable after construction; thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "muninn/core/status.h"

namespace muninn::model {

// GGUF's value type ids (the numbers are the on-disk encoding).
enum class MetadataType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// "u8", "f32", "string", "array", ...; "invalid" for ids outside the enum.
std::string_view MetadataTypeName(MetadataType type);
// Bytes one scalar takes on disk (0 for string and array, which have variable size).
size_t MetadataScalarSize(MetadataType type);
// True for the ids GGUF defines (0..12).
bool IsValidMetadataType(uint32_t id);

class MetadataValue {
 public:
  MetadataValue() = default;  // u8 0

  // ---- construction ----
  static MetadataValue U8(uint8_t v);
  static MetadataValue I8(int8_t v);
  static MetadataValue U16(uint16_t v);
  static MetadataValue I16(int16_t v);
  static MetadataValue U32(uint32_t v);
  static MetadataValue I32(int32_t v);
  static MetadataValue U64(uint64_t v);
  static MetadataValue I64(int64_t v);
  static MetadataValue F32(float v);
  static MetadataValue F64(double v);
  static MetadataValue Bool(bool v);
  static MetadataValue String(std::string v);
  // An array of scalars of `elem` type (not string/array) given as packed little-endian bytes;
  // `raw.size()` must be a multiple of the element size (checked: programmer error otherwise).
  static MetadataValue ScalarArray(MetadataType elem, std::vector<uint8_t> raw);
  // Convenience builders for scalar arrays; values are narrowed to `elem` (an integer type for
  // IntArray, f32/f64 for FloatArray) exactly as a static_cast would.
  static MetadataValue IntArray(MetadataType elem, std::span<const int64_t> values);
  static MetadataValue FloatArray(MetadataType elem, std::span<const double> values);
  static MetadataValue BoolArray(std::span<const bool> values);
  static MetadataValue StringArray(std::vector<std::string> values);
  // An array whose elements are arrays (each with its own element type).
  static MetadataValue ArrayOfArrays(std::vector<MetadataValue> values);

  // ---- inspection ----
  MetadataType type() const { return type_; }
  bool is_array() const { return type_ == MetadataType::kArray; }
  // Arrays only: the element type.
  MetadataType element_type() const { return elem_type_; }
  // Arrays only: the number of elements.
  size_t array_size() const { return count_; }
  // "u32", "string", "array[string]", "array[array[i32]]" (first inner array's type).
  std::string TypeName() const;
  // A short human-readable rendering; arrays show at most `max_items` elements then "...".
  std::string ToString(size_t max_items = 8) const;

  // ---- typed access (errors name the expected and actual type) ----
  StatusOr<int64_t> AsInt() const;
  StatusOr<uint64_t> AsUint() const;  // integers >= 0 only
  StatusOr<double> AsFloat() const;   // f32, f64 or any integer
  StatusOr<bool> AsBool() const;
  StatusOr<std::string_view> AsString() const;

  // Arrays: element-wise versions of the scalar accessors.
  StatusOr<std::vector<int64_t>> AsIntArray() const;
  StatusOr<std::vector<float>> AsFloatArray() const;
  StatusOr<std::span<const std::string>> AsStringArray() const;
  // Arrays of arrays: the inner arrays.
  StatusOr<std::span<const MetadataValue>> AsArrayOfArrays() const;

  // Unchecked views (empty when the value is not that kind of array).
  // Arrays of scalars: the packed little-endian element bytes.
  std::span<const uint8_t> raw_elements() const { return raw_; }
  std::span<const std::string> string_elements() const { return strings_; }
  std::span<const MetadataValue> array_elements() const { return arrays_; }

  friend bool operator==(const MetadataValue& a, const MetadataValue& b);

 private:
  Status TypeError(std::string_view expected) const;
  // Element i of a scalar array, decoded like the scalar accessors.
  int64_t RawInt(size_t i) const;
  uint64_t RawUint(size_t i) const;
  double RawFloat(size_t i) const;

  MetadataType type_ = MetadataType::kU8;
  MetadataType elem_type_ = MetadataType::kU8;  // arrays only
  // Scalars: integer bits (signed values sign-extended), 0/1 for bool; floats in `real_`.
  uint64_t bits_ = 0;
  double real_ = 0.0;
  std::string string_;
  size_t count_ = 0;                    // arrays: number of elements
  std::vector<uint8_t> raw_;            // scalar arrays: count_ * element size bytes
  std::vector<std::string> strings_;    // string arrays
  std::vector<MetadataValue> arrays_;   // arrays of arrays
};

// One key/value pair of checkpoint metadata.
struct MetadataEntry {
  std::string key;
  MetadataValue value;
};

}  // namespace muninn::model
