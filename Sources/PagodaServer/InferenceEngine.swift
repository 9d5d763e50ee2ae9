import Pagoda

/// What the HTTP server needs from an engine. `AsyncEngine` conforms; tests may plug in fakes.
public protocol InferenceEngine: Sendable {
    var tokenizer: Tokenizer { get }
    var chatTemplate: ChatTemplate? { get }
    var bosToken: String { get }
    var eosToken: String { get }
    var maxModelLen: Int { get }
    func generate(_ request: EngineRequest) throws -> AsyncStream<RequestOutput>
    func abort(requestId: String)
    func stats() -> EngineStats
    func shutdown()
}

extension AsyncEngine: InferenceEngine {}
