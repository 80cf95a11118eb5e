// cm_layout_i8.comp — the accumulator layout probe with the int8 product's int32 layout
// (cm_layout.glsl), for devices with 8-bit cooperative matrices.
#version 450
#extension GL_NV_integer_cooperative_matrix : enable
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : enable
#extension GL_EXT_shader_explicit_arithmetic_types_int32 : enable
#define CM_INDEX_I8 1
#include "cm_layout.glsl"
