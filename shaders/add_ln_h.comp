// add_ln_h.comp — residual add + LayerNorm, f32 output plus an f16 copy (see layernorm.glsl).
#version 450
#define EMBED 0
#define OUT_F16 1
#include "layernorm.glsl"
