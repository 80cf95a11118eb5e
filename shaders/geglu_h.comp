// geglu_h.comp — GEGLU over f16 activations, f32 arithmetic (see geglu.glsl).
#version 450
#define QKV_F16 1
#include "geglu.glsl"
