/// Executes a scheduled step: makes the block copies, flattens the scheduled sequences into one batch
/// (token ids, positions, block tables), runs the model, and hands back each sequence's logits rows.
public final class ModelRunner {
    public let model: LlamaModel
    public let cache: KVCacheStorage
    public let pool: ThreadPool
    /// Tokens run through the model since start (prefix-cache hits are not computed, so not counted).
    public private(set) var computedTokens = 0

    public init(model: LlamaModel, cache: KVCacheStorage, pool: ThreadPool) {
        self.model = model
        self.cache = cache
        self.pool = pool
    }

    /// Logits for one sequence of the step: the row to sample from (if the step reaches its last known
    /// token) and rows for prompt log-probabilities (position → row).
    public struct SequenceLogits {
        public var sampleRow: Int?
        public var promptRows: [(position: Int, row: Int)] = []
    }

    public func execute(_ output: SchedulerOutput, kv: KVCacheManager) -> (logits: [Float], rows: [SequenceLogits]) {
        for c in output.copies { cache.copyBlock(from: c.src, to: c.dst) }
        var tokens: [Int32] = [], positions: [Int32] = []
        var sequences: [AttentionSequence] = []
        var logitRows: [Int] = []
        var perSeq: [SequenceLogits] = []
        for s in output.scheduled {
            let r = s.request
            let start = r.numComputedTokens
            let base = tokens.count
            for p in start..<start + s.numNewTokens {
                tokens.append(Int32(r.allTokenIds[p]))
                positions.append(Int32(p))
            }
            sequences.append(AttentionSequence(tokenStart: base, tokenCount: s.numNewTokens, startPosition: start,
                                               blockTable: kv.blocks(of: r.key).map(Int32.init)))
            var info = SequenceLogits()
            let promptEnd = min(start + s.numNewTokens, r.promptTokenIds.count - 1)
            if r.params.promptLogprobs != nil && start < promptEnd {
                for p in start..<promptEnd where p + 1 >= r.promptLogprobs.count {
                    info.promptRows.append((p, logitRows.count))
                    logitRows.append(base + p - start)
                }
            }
            if start + s.numNewTokens == r.numTokens {
                info.sampleRow = logitRows.count
                logitRows.append(base + s.numNewTokens - 1)
            }
            perSeq.append(info)
        }
        computedTokens += tokens.count
        let batch = ForwardBatch(tokens: tokens, positions: positions, sequences: sequences, logitRows: logitRows)
        return (model.forward(batch, cache: cache, pool: pool), perSeq)
    }
}
