// embed_ln.comp — embedding gather + LayerNorm, f32 output (see layernorm.glsl).
#version 450
#define EMBED 1
#define OUT_F16 0
#include "layernorm.glsl"
