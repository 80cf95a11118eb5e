// cm_layout.comp — the accumulator layout probe for every cooperative-matrix device
// (cm_layout.glsl).
#version 450
#include "cm_layout.glsl"
