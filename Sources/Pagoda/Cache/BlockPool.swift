/// The identity of a full KV block's content for prefix caching: the hash of its parent block chained
/// with the block's own tokens (and any extra key, such as an adapter id). Equality compares the tokens
/// themselves, so two different contents never share a block even if their hashes collide.
public struct BlockHash: Hashable, Sendable {
    public let value: UInt64
    public let parent: UInt64
    public let tokens: [Int32]
    public let extraKey: Int

    public init(parent: BlockHash?, tokens: [Int32], extraKey: Int = 0) {
        self.parent = parent?.value ?? 0xcbf2_9ce4_8422_2325
        self.tokens = tokens
        self.extraKey = extraKey
        // FNV-1a over the parent hash, the extra key and the tokens: deterministic across runs.
        var h = self.parent
        func mix(_ x: UInt64) {
            var v = x
            for _ in 0..<8 {
                h ^= v & 0xff
                h = h &* 0x100_0000_01b3
                v >>= 8
            }
        }
        mix(UInt64(bitPattern: Int64(extraKey)))
        for t in tokens { mix(UInt64(UInt32(bitPattern: t))) }
        value = h
    }

    public static func == (a: BlockHash, b: BlockHash) -> Bool {
        a.value == b.value && a.parent == b.parent && a.extraKey == b.extraKey && a.tokens == b.tokens
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(value) }
}

/// The pool of KV blocks: reference counts, a free queue in eviction order (least recently freed first),
/// and the prefix cache mapping full-block content hashes to blocks. Freed blocks keep their content and
/// stay findable in the cache until they are handed out again.
public struct BlockPool: Sendable {
    public let blockCount: Int
    public private(set) var refCounts: [Int]
    /// Content hash of each block that holds a full, cached block.
    public private(set) var hashes: [BlockHash?]
    private var cached: [BlockHash: Int] = [:]
    // Doubly linked free queue over block ids; -1 ends it.
    private var prev: [Int], next: [Int]
    private var inFreeQueue: [Bool]
    private var head = -1, tail = -1
    public private(set) var freeCount = 0

    public init(blockCount: Int) {
        precondition(blockCount > 0)
        self.blockCount = blockCount
        refCounts = Array(repeating: 0, count: blockCount)
        hashes = Array(repeating: nil, count: blockCount)
        prev = Array(repeating: -1, count: blockCount)
        next = Array(repeating: -1, count: blockCount)
        inFreeQueue = Array(repeating: false, count: blockCount)
        for b in 0..<blockCount { pushBack(b) }
    }

    /// Blocks that are referenced by at least one request.
    public var usedCount: Int { blockCount - freeCount }
    /// Blocks in the prefix cache (in use or free).
    public var cachedCount: Int { cached.count }

    private mutating func pushBack(_ b: Int) {
        prev[b] = tail
        next[b] = -1
        if tail >= 0 { next[tail] = b } else { head = b }
        tail = b
        inFreeQueue[b] = true
        freeCount += 1
    }

    private mutating func unlink(_ b: Int) {
        if prev[b] >= 0 { next[prev[b]] = next[b] } else { head = next[b] }
        if next[b] >= 0 { prev[next[b]] = prev[b] } else { tail = prev[b] }
        prev[b] = -1
        next[b] = -1
        inFreeQueue[b] = false
        freeCount -= 1
    }

    /// Takes `n` blocks from the front of the free queue (evicting their cached content), or nil if fewer are free.
    public mutating func allocate(_ n: Int) -> [Int]? {
        guard n <= freeCount else { return nil }
        var out: [Int] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let b = head
            unlink(b)
            if let h = hashes[b] {
                if cached[h] == b { cached[h] = nil }
                hashes[b] = nil
            }
            refCounts[b] = 1
            out.append(b)
        }
        return out
    }

    /// The cached block holding this content, if any.
    public func lookup(_ hash: BlockHash) -> Int? { cached[hash] }

    /// Takes one more reference to a block (a prefix-cache hit or a fork); a free cached block leaves the free queue.
    public mutating func retain(_ b: Int) {
        if refCounts[b] == 0 { unlink(b) }
        refCounts[b] += 1
    }

    /// Drops one reference; at zero the block joins the back of the free queue, its cached content kept.
    public mutating func release(_ b: Int) {
        precondition(refCounts[b] > 0, "block \(b) released more often than retained")
        refCounts[b] -= 1
        if refCounts[b] == 0 { pushBack(b) }
    }

    /// Records that block `b` now holds the full content `hash` (first holder wins).
    public mutating func markCached(_ b: Int, hash: BlockHash) {
        guard hashes[b] == nil else { return }
        if cached[hash] == nil {
            cached[hash] = b
            hashes[b] = hash
        }
    }

    /// Forgets every cached block (free blocks stay free).
    public mutating func resetPrefixCache() {
        cached.removeAll()
        for b in 0..<blockCount { hashes[b] = nil }
    }

    /// Checks the pool's invariants: free-queue membership agrees with reference counts, counts add up.
    public func checkInvariants() -> String? {
        var n = 0
        var b = head
        var seen = Set<Int>()
        while b >= 0 {
            if seen.contains(b) { return "free queue has a cycle at \(b)" }
            seen.insert(b)
            if refCounts[b] != 0 { return "block \(b) is in the free queue with \(refCounts[b]) references" }
            n += 1
            b = next[b]
        }
        if n != freeCount { return "free queue holds \(n) blocks but freeCount is \(freeCount)" }
        for i in 0..<blockCount where refCounts[i] == 0 && !inFreeQueue[i] { return "block \(i) is unreferenced but not free" }
        for (h, blk) in cached where hashes[blk] != h { return "cache entry for block \(blk) disagrees with its hash" }
        return nil
    }
}
