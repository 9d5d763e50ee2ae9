/// The memory behind the paged KV cache: for every layer, `blockCount` blocks of `blockSize` token slots,
/// each slot holding the keys and values of all KV heads (fp32; keys transposed within a block, see `LayerKV`). Allocated once; blocks are handed out
/// by the block pool, never per request.
public final class KVCacheStorage: @unchecked Sendable {
    public let layerCount: Int
    public let blockCount: Int
    public let blockSize: Int
    public let kvHeads: Int
    public let headDim: Int
    private let keyBuffers: [FloatBuffer]
    private let valueBuffers: [FloatBuffer]
    public let layers: [LayerKV]

    public init(config: ModelConfig, blockCount: Int, blockSize: Int) {
        precondition(blockCount > 0 && blockSize > 0)
        layerCount = config.layerCount
        self.blockCount = blockCount
        self.blockSize = blockSize
        kvHeads = config.kvHeadCount
        headDim = config.headDim
        let perLayer = blockCount * blockSize * config.kvHeadCount * config.headDim
        keyBuffers = (0..<config.layerCount).map { _ in FloatBuffer(count: perLayer) }
        valueBuffers = (0..<config.layerCount).map { _ in FloatBuffer(count: perLayer) }
        layers = zip(keyBuffers, valueBuffers).map { LayerKV(keys: $0.pointer, values: $1.pointer) }
    }

    /// Bytes of one block across all layers (keys and values).
    public static func bytesPerBlock(config: ModelConfig, blockSize: Int) -> Int {
        2 * config.layerCount * blockSize * config.kvHeadCount * config.headDim * MemoryLayout<Float>.size
    }

    public var bytesPerBlock: Int { 2 * layerCount * blockSize * kvHeads * headDim * MemoryLayout<Float>.size }
    public var totalBytes: Int { bytesPerBlock * blockCount }
}

extension KVCacheStorage {
    /// Copies block `src` into block `dst` in every layer (copy-on-write).
    public func copyBlock(from src: Int, to dst: Int) {
        let n = blockSize * kvHeads * headDim
        for layer in layers {
            (layer.keys + dst * n).update(from: layer.keys + src * n, count: n)
            (layer.values + dst * n).update(from: layer.values + src * n, count: n)
        }
    }
}
