// Dequantization of GGML block formats to fp32: the reference path every fast kernel is tested against.
// Block layouts follow the GGUF specification (ggml's block_q4_0, block_q4_K, ...).

@inline(__always) func halfToFloat(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }
@inline(__always) func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }
@inline(__always) func floatToBF16(_ x: Float) -> UInt16 {
    // round to nearest even, as PyTorch does
    let b = x.bitPattern
    if x.isNaN { return UInt16(b >> 16) | 0x40 }
    return UInt16((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
}

@inline(__always) private func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 { p.loadUnaligned(fromByteOffset: o, as: UInt16.self) }
@inline(__always) private func f16(_ p: UnsafeRawPointer, _ o: Int) -> Float { halfToFloat(u16(p, o)) }
@inline(__always) private func byte(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block (12 packed bytes at `q`).
@inline(__always) private func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
    if j < 4 {
        return (Float(byte(q, j) & 63), Float(byte(q, j + 4) & 63))
    }
    let d = (byte(q, j + 4) & 0xF) | ((byte(q, j - 4) >> 6) << 4)
    let m = (byte(q, j + 4) >> 4) | ((byte(q, j) >> 6) << 4)
    return (Float(d), Float(m))
}

/// Dequantizes `count` elements (a multiple of the block size) of type `dtype` from `src` into `dst`.
public func dequantize(_ dtype: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count % dtype.blockSize == 0, "element count \(count) is not a multiple of the \(dtype) block size")
    let nb = count / dtype.blockSize
    let bb = dtype.blockBytes
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        for i in 0..<count { dst[i] = f16(src, 2 * i) }
    case .bf16:
        for i in 0..<count { dst[i] = bf16ToFloat(u16(src, 2 * i)) }
    case .q4_0:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 32
            let d = f16(p, 0)
            for j in 0..<16 {
                let q = byte(p, 2 + j)
                y[j] = Float(Int(q & 0xF) - 8) * d
                y[j + 16] = Float(Int(q >> 4) - 8) * d
            }
        }
    case .q4_1:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 32
            let d = f16(p, 0), m = f16(p, 2)
            for j in 0..<16 {
                let q = byte(p, 4 + j)
                y[j] = Float(q & 0xF) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    case .q5_0:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 32
            let d = f16(p, 0)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let q = byte(p, 6 + j)
                let h0 = Int(((qh >> UInt32(j)) << 4) & 0x10)
                let h1 = Int((qh >> UInt32(j + 12)) & 0x10)
                y[j] = Float((Int(q & 0xF) | h0) - 16) * d
                y[j + 16] = Float((Int(q >> 4) | h1) - 16) * d
            }
        }
    case .q5_1:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 32
            let d = f16(p, 0), m = f16(p, 2)
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            for j in 0..<16 {
                let q = byte(p, 8 + j)
                let h0 = Int(((qh >> UInt32(j)) << 4) & 0x10)
                let h1 = Int((qh >> UInt32(j + 12)) & 0x10)
                y[j] = Float(Int(q & 0xF) | h0) * d + m
                y[j + 16] = Float(Int(q >> 4) | h1) * d + m
            }
        }
    case .q8_0:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 32
            let d = f16(p, 0)
            for j in 0..<32 { y[j] = Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
        }
    case .q8_K:
        for b in 0..<nb {
            let p = src + b * bb, y = dst + b * 256
            let d = p.loadUnaligned(fromByteOffset: 0, as: Float.self)
            for j in 0..<256 { y[j] = Float(p.load(fromByteOffset: 4 + j, as: Int8.self)) * d }
        }
    case .q4_K:
        // d (f16), dmin (f16), scales[12], qs[128]
        for b in 0..<nb {
            let p = src + b * bb
            var y = dst + b * 256
            let d = f16(p, 0), dmin = f16(p, 2)
            let scales = p + 4
            var q = p + 16
            var s = 0
            for _ in 0..<4 {
                let (sc1, m1) = scaleMinK4(s, scales)
                let (sc2, m2) = scaleMinK4(s + 1, scales)
                let d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2
                for l in 0..<32 { y[l] = d1 * Float(byte(q, l) & 0xF) - mm1 }
                for l in 0..<32 { y[32 + l] = d2 * Float(byte(q, l) >> 4) - mm2 }
                y += 64; q += 32; s += 2
            }
        }
    case .q5_K:
        // d, dmin, scales[12], qh[32], qs[128]
        for b in 0..<nb {
            let p = src + b * bb
            var y = dst + b * 256
            let d = f16(p, 0), dmin = f16(p, 2)
            let scales = p + 4, qh = p + 16
            var ql = p + 48
            var s = 0
            var u1: UInt8 = 1, u2: UInt8 = 2
            for _ in 0..<4 {
                let (sc1, m1) = scaleMinK4(s, scales)
                let (sc2, m2) = scaleMinK4(s + 1, scales)
                let d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2
                for l in 0..<32 {
                    let h: Float = byte(qh, l) & u1 != 0 ? 16 : 0
                    y[l] = d1 * (Float(byte(ql, l) & 0xF) + h) - mm1
                }
                for l in 0..<32 {
                    let h: Float = byte(qh, l) & u2 != 0 ? 16 : 0
                    y[32 + l] = d2 * (Float(byte(ql, l) >> 4) + h) - mm2
                }
                y += 64; ql += 32; s += 2; u1 <<= 2; u2 <<= 2
            }
        }
    case .q6_K:
        // ql[128], qh[64], scales[16] (int8), d (f16)
        for b in 0..<nb {
            let p = src + b * bb
            var y = dst + b * 256
            let d = f16(p, 208)
            var ql = p, qh = p + 128, sc = p + 192
            for _ in 0..<2 {
                for l in 0..<32 {
                    let i = l / 16
                    let h = byte(qh, l)
                    let q1 = Int((byte(ql, l) & 0xF) | ((h & 3) << 4)) - 32
                    let q2 = Int((byte(ql, l + 32) & 0xF) | (((h >> 2) & 3) << 4)) - 32
                    let q3 = Int((byte(ql, l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q4 = Int((byte(ql, l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                    y[l] = d * Float(sc.load(fromByteOffset: i, as: Int8.self)) * Float(q1)
                    y[l + 32] = d * Float(sc.load(fromByteOffset: i + 2, as: Int8.self)) * Float(q2)
                    y[l + 64] = d * Float(sc.load(fromByteOffset: i + 4, as: Int8.self)) * Float(q3)
                    y[l + 96] = d * Float(sc.load(fromByteOffset: i + 6, as: Int8.self)) * Float(q4)
                }
                y += 128; ql += 64; qh += 32; sc += 8
            }
        }
    default:
        preconditionFailure("dequantize: \(dtype) is not supported")
    }
}
