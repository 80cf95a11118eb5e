// cm_index.glsl — the 16x16 fp32 matrix whose element (row, column) holds 16·row + column,
// made as the result of an MMA, so that a lane learns where an MMA puts each element of an
// accumulator it holds (attn_fa.glsl, cm_layout.comp).
//
// GL_NV_cooperative_matrix leaves the element layout to the implementation and has no
// "use" for a matrix, so a driver may lay out a matrix that is only loaded and read otherwise
// than the accumulators of a product. On an H100 (driver 580) attn_fa.glsl, which read its
// indices off a loaded matrix, masked and summed the wrong elements (1-token texts: cosine
// 0.77), though the same load in this probe alone matches the product's layout
// (docs/bench-gpu.md, 2026-12-06); a product's result is the accumulators' layout by
// construction. A (row r: 16r, 1, then zeros) times B (row 0: ones, row 1: 0..15, then
// zeros) gives 16r·1 + 1·c: every value at most 255, exact in f16 and fp32.
shared uvec4 CmIdx[64];  // A's 16 rows of 2 uvec4, then B's

void cm_index_stage(uint tid, uint nthreads)
{
	for (uint i = tid; i < 64; i += nthreads) {
		uvec4 v = uvec4(0);
		if (i < 32) {
			if (i % 2 == 0)
				v.x = packHalf2x16(vec2(16.0 * float(i / 2), 1.0));
		} else {
			const uint k = (i - 32) / 2;
			const float c = 8.0 * float(i % 2);
			if (k == 0)
				v = uvec4(packHalf2x16(vec2(1.0)));
			else if (k == 1)
				v = uvec4(packHalf2x16(vec2(c, c + 1.0)), packHalf2x16(vec2(c + 2.0, c + 3.0)),
					  packHalf2x16(vec2(c + 4.0, c + 5.0)), packHalf2x16(vec2(c + 6.0, c + 7.0)));
		}
		CmIdx[i] = v;
	}
}

// After cm_index_stage and a barrier.
fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> cm_index()
{
	fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a, b;
	coopMatLoadNV(a, CmIdx, 0, 2, false);
	coopMatLoadNV(b, CmIdx, 32, 2, false);
	return coopMatMulAddNV(a, b, fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0));
}

#ifdef CM_INDEX_I8
// The same for an int8 product's int32 accumulators (gemm_i8.glsl, cm_layout_i8.comp), which
// a driver need not lay out as fp32 ones: A (16x32 int8, row r: r, 1, then zeros) times B
// (32x16, stored column-major as gemm_i8.glsl loads W: column c: 16, c, then zeros) gives
// 16r + c. Converting the int32 matrix to fp32 instead (a cooperative-matrix conversion) gave
// elements in another order on an H100 (driver 580), and took longer than the product.
shared uvec4 CmIdxI[64];  // A's 16 rows of 2 uvec4, then B's 16 columns

void cm_index_i8_stage(uint tid, uint nthreads)
{
	for (uint i = tid; i < 64; i += nthreads) {
		uvec4 v = uvec4(0);
		if (i % 2 == 0)
			v.x = i < 32 ? (i / 2) | 1u << 8 : 16u | ((i - 32) / 2) << 8;
		CmIdxI[i] = v;
	}
}

// After cm_index_i8_stage and a barrier.
icoopmatNV<32, gl_ScopeSubgroup, 16, 16> cm_index_i8()
{
	icoopmatNV<8, gl_ScopeSubgroup, 16, 32> a;
	icoopmatNV<8, gl_ScopeSubgroup, 32, 16> b;
	coopMatLoadNV(a, CmIdxI, 0, 2, false);
	coopMatLoadNV(b, CmIdxI, 32, 2, true);
	return coopMatMulAddNV(a, b, icoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0));
}
#endif
