// quant_i8.glsl — the int8 code of --precision int8's activations, shared by the quantising
// pass (quant_i8.comp) and the LayerNorm that quantises its own output (add_ln_sg.comp), so
// that both code the same way: symmetric, one scale a row, m / 127 with m = max |x|, each
// value x · (127 / m) rounded to nearest even. (The pass codes the f16 values it reads, the
// LayerNorm its fp32 ones: test_vk_quant checks each against the same CPU reference.)

// 127 / m, or 0 for a row of zeros
float quant_inv(float m)
{
	return m > 0.0 ? 127.0 / m : 0.0;
}

// Outlier channels (EMBED_VK_INT8_OUTLIERS, forward_vk.c): the host's map gives each input
// channel its slot among the row's outliers, or -1. An outlier leaves the int8 row (code 0)
// for xo (f16, OUT_SLOTS a row), in the units of the row's scale (v · 127 / m, like the codes
// before rounding), where the product's epilogue multiplies it by W's outlier columns, also
// in their rows' units, and adds it to the int32 sum before scaling (gemm_i8.glsl). So an
// outlier neither sets the row's scale nor is rounded to it; only that its value in those
// units must fit f16 puts a floor under the scale: max_abs4 counts it at 127 / 60000.
// Needs the quantiser's xo buffer (float16_t xo[], GL_EXT_shader_16bit_storage).
// (OUT_FLOOR, NO_SMOOTH, NO_OUTLIERS, OUT_SLOTS: common.glsl, beside pack4i)

float max_abs4(vec4 v, vec4 slot)   // slot: the 4 channels' slots, or all -1
{
	const vec4 a = abs(v) * mix(vec4(1.0), vec4(OUT_FLOOR), greaterThanEqual(slot, vec4(0.0)));
	return max(max(a.x, a.y), max(a.z, a.w));
}

// the 4 values' codes at 127 / m = inv, an outlier's code 0 and its v · inv in xo
uint pack4_outliers(vec4 v, vec4 slot, float inv, uint row)
{
	[[unroll]] for (uint c = 0; c < 4; c++)
		if (slot[c] >= 0.0) {
			xo[row * OUT_SLOTS + uint(slot[c])] = float16_t(v[c] * inv);
			v[c] = 0.0;
		}
	return pack4i(v * inv);
}
