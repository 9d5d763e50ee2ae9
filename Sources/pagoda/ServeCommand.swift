import ArgumentParser
import Foundation
import Logging
import Pagoda
import PagodaServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve a model over an OpenAI-compatible HTTP API.")

    @Option(help: "GGUF file or Hugging Face folder.") var model = defaultModelPath
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port).") var port = 8000
    @Option(help: "Model name in the API (default: the model file's name).") var servedModelName: String?
    @Option(help: "Require 'Authorization: Bearer KEY' (default: $PAGODA_API_KEY).") var apiKey: String?
    @Option(help: "Tokens per KV-cache block.") var blockSize: Int?
    @Option(help: "Memory for the KV cache, in bytes (suffixes K, M, G allowed).") var kvCacheMemory: String?
    @Option(help: "Number of KV-cache blocks (overrides --kv-cache-memory).") var numKvBlocks: Int?
    @Option(help: KVCacheDtypeArgument.help) var kvCacheDtype = KVCacheDtypeArgument.auto
    @Option(help: "Most sequences in one batch.") var maxNumSeqs: Int?
    @Option(help: "Most tokens in one batch (default 256: prompts are prefilled in chunks of this size, so the first tokens of a burst of requests go out sooner and running streams wait less between tokens; larger values favour throughput on long prompts).") var maxNumBatchedTokens = 256
    @Flag(help: "Disable the prefix cache.") var noEnablePrefixCaching = false
    @Option(help: "Compute threads.") var threads: Int?
    @Option(help: "Context length (default: the model's).") var maxModelLen: Int?
    @Option(help: "Most requests waiting; more get 429.") var maxWaiting: Int?
    @Option(help: "Seconds in-flight requests get after SIGINT/SIGTERM before they are aborted.") var shutdownGracePeriod: Double = 30

    static func parseBytes(_ s: String) throws -> Int {
        let t = s.trimmingCharacters(in: .whitespaces).uppercased().replacingOccurrences(of: "IB", with: "").replacingOccurrences(of: "B", with: "")
        let mult: Double
        var num = Substring(t)
        switch t.last {
        case "K": mult = 1024; num = num.dropLast()
        case "M": mult = 1048576; num = num.dropLast()
        case "G": mult = 1073741824; num = num.dropLast()
        default: mult = 1
        }
        guard let v = Double(num), v > 0 else { throw ValidationError("--kv-cache-memory: '\(s)' is not a size") }
        return Int(v * mult)
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            return h
        }
        let logger = Logger(label: "pagoda")
        var config = EngineConfig()
        if let v = blockSize { config.blockSize = v }
        if let v = kvCacheMemory { config.kvCacheMemoryBytes = try Self.parseBytes(v) }
        config.kvCacheDtype = kvCacheDtype.dtype
        if let v = numKvBlocks { config.numKVBlocks = v }
        if let v = maxNumSeqs { config.maxNumSeqs = v }
        config.maxNumBatchedTokens = maxNumBatchedTokens
        if noEnablePrefixCaching { config.enablePrefixCaching = false }
        if let v = threads { config.threads = v }
        if let v = maxModelLen { config.maxModelLen = v }
        if let v = maxWaiting { config.maxWaiting = v }

        var options = ServerOptions()
        options.host = host
        options.port = port
        options.modelPath = model
        options.servedModelName = servedModelName ?? Self.defaultName(model)
        options.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PAGODA_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        options.gracePeriod = shutdownGracePeriod

        guard FileManager.default.fileExists(atPath: model) else {
            throw ValidationError("model not found: \(model) (run scripts/fetch-model for the default model)")
        }
        let engine: AsyncEngine
        do {
            engine = try AsyncEngine.load(modelPath: model, config: config) { line in logger.info("\(line)") }
        } catch {
            logger.error("failed to load \(model): \(error)")
            throw ExitCode.failure
        }
        let metrics = ServerMetrics(bootstrap: true)
        logger.info("model '\(options.servedModelName)' loaded; max_model_len \(engine.maxModelLen)")
        try await runServer(engine: engine, options: options, metrics: metrics, logger: logger) { url in
            FileHandle.standardOutput.write(Data("Serving on \(url)\n".utf8))
        }
        logger.info("shut down")
    }

    static func defaultName(_ path: String) -> String {
        var name = URL(fileURLWithPath: path).lastPathComponent
        if name.lowercased().hasSuffix(".gguf") { name = String(name.dropLast(5)) }
        return name.isEmpty ? "pagoda" : name
    }
}
