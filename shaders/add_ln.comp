// add_ln.comp — residual add + LayerNorm, f32 output (see layernorm.glsl).
#version 450
#define EMBED 0
#define OUT_F16 0
#include "layernorm.glsl"
