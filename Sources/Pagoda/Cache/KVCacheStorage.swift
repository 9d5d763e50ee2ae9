/// The element type of the KV cache (vLLM's `--kv-cache-dtype`, llama.cpp's `-ctk/-ctv`).
public enum KVCacheDType: String, Sendable, CaseIterable {
    /// fp32: exact; the reference path (`--kv-cache-dtype f32`).
    case f32
    /// fp16: half the memory and bandwidth, as llama.cpp stores its cache by default.
    case f16

    /// u8: a quarter of fp32's bytes plus per-token parameters (58% of fp16's bytes at 64 dimensions): each key's
    /// dimensions in groups of 16 and each value row whole are stored as codes 0…255 with an fp16 scale and
    /// minimum (x ≈ min + scale·code, asymmetric as OpenVINO's u8 cache). Needs head and block sizes that are
    /// multiples of 16. `auto` for quantized weights.
    case u8

    /// Bytes of one element of the fp32 and fp16 caches.
    public var bytes: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .u8: return 1
        }
    }

    /// Bytes of one KV head's keys (`keys`) or values of one block: its elements, and for u8 the codes then the
    /// fp16 scales and minima ([group][slot] for keys, [slot] for values; see `LayerKV`).
    public func runBytes(blockSize: Int, headDim: Int, keys: Bool) -> Int {
        let codes = blockSize * headDim * bytes
        guard self == .u8 else { return codes }
        return codes + 2 * 2 * blockSize * (keys ? headDim / 16 : 1)
    }

    /// Whether the cache type can hold heads of `headDim` dimensions in blocks of `blockSize` slots.
    public func supports(headDim: Int, blockSize: Int) -> Bool {
        self != .u8 || (headDim % 16 == 0 && blockSize % 16 == 0)
    }

    /// What `auto` stands for with a model: the cache is never the largest error. Quantized weights multiply
    /// int8 activations, whose rounding outweighs the cache's: u8 (as OpenVINO stores its cache by default), or
    /// fp16 (as llama.cpp does) where the head or block size is not a multiple of 16. On the default model, the
    /// first-step logprob error against Transformers over the 20 greedy references is max 0.202, mean 0.100
    /// with u8; 0.238 and 0.095 with fp16; 0.183 and 0.095 with fp32; 20/20 close each. F32, F16 and BF16
    /// weights multiply fp32 activations (and the fp32 reference path): fp32, exact.
    public static func automatic(for model: LlamaModel, blockSize: Int = 16) -> KVCacheDType {
        guard model.hasQuantizedMatrices else { return .f32 }
        return KVCacheDType.u8.supports(headDim: model.config.headDim, blockSize: blockSize) ? .u8 : .f16
    }
}

/// The memory behind the paged KV cache: for every layer, `blockCount` blocks of `blockSize` token slots,
/// each slot holding the keys and values of all KV heads (fp32, fp16 or u8; keys transposed within a block, see
/// `LayerKV`). Allocated once, untouched until used (pages are mapped on first write); blocks are handed out
/// by the block pool, never per request.
public final class KVCacheStorage: @unchecked Sendable {
    public let layerCount: Int
    public let blockCount: Int
    public let blockSize: Int
    public let kvHeads: Int
    public let headDim: Int
    public let dtype: KVCacheDType
    private let buffers: [UnsafeMutableRawPointer]
    public let layers: [LayerKV]

    public init(config: ModelConfig, blockCount: Int, blockSize: Int, dtype: KVCacheDType = .f32) {
        precondition(blockCount > 0 && blockSize > 0)
        layerCount = config.layerCount
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.dtype = dtype
        kvHeads = config.kvHeadCount
        headDim = config.headDim
        precondition(dtype.supports(headDim: config.headDim, blockSize: blockSize),
                     "a \(dtype) KV cache needs head and block sizes that are multiples of 16")
        let keyBytes = blockCount * config.kvHeadCount * dtype.runBytes(blockSize: blockSize, headDim: config.headDim, keys: true)
        let valueBytes = blockCount * config.kvHeadCount * dtype.runBytes(blockSize: blockSize, headDim: config.headDim, keys: false)
        // Plain 4 KiB pages: huge pages would make every first write to a new 2 MiB of cache fault, zero and
        // possibly compact memory in the middle of a step (measured: cache writes 4× slower in a 64-sequence
        // batch), for no measured gain in attention. Page aligned, so that one head's keys or values of a
        // block (4 KiB for 16 fp32 slots of 64 dimensions) are one page, not parts of two.
        let buffers = (0..<2 * config.layerCount).map { i in
            UnsafeMutableRawPointer.allocate(byteCount: max(i % 2 == 0 ? keyBytes : valueBytes, 64), alignment: 4096)
        }
        self.buffers = buffers
        layers = (0..<config.layerCount).map { LayerKV(keys: buffers[2 * $0], values: buffers[2 * $0 + 1], dtype: dtype) }
    }

    deinit { for b in buffers { b.deallocate() } }

    /// Bytes of one block across all layers (keys and values).
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int, dtype: KVCacheDType) -> Int {
        bytesPerBlock(layers: config.layerCount, kvHeads: config.kvHeadCount, headDim: config.headDim,
                      blockSize: blockSize, dtype: dtype)
    }

    public var bytesPerBlock: Int {
        Self.bytesPerBlock(layers: layerCount, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize, dtype: dtype)
    }

    private static func bytesPerBlock(layers: Int, kvHeads: Int, headDim: Int, blockSize: Int, dtype: KVCacheDType) -> Int {
        layers * kvHeads * (dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: true)
            + dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: false))
    }
    public var totalBytes: Int { bytesPerBlock * blockCount }
}

extension KVCacheStorage {
    /// Copies block `src` into block `dst` in every layer (copy-on-write).
    public func copyBlock(from src: Int, to dst: Int) {
        let nk = kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: true)
        let nv = kvHeads * dtype.runBytes(blockSize: blockSize, headDim: headDim, keys: false)
        for layer in layers {
            (layer.keys + dst * nk).copyMemory(from: layer.keys + src * nk, byteCount: nk)
            (layer.values + dst * nv).copyMemory(from: layer.values + src * nv, byteCount: nv)
        }
    }
}
