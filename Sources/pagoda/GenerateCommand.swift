import ArgumentParser
import Foundation
import Pagoda

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "Generate text from a prompt and stream it.")

    @Option(help: "GGUF file or Hugging Face folder.") var model = defaultModelPath
    @Option(help: "The prompt.") var prompt: String
    @Flag(help: "Wrap the prompt as a user message in the model's chat template.") var chat = false
    @Option(help: "Tokens to generate at most.") var maxTokens = 64
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0
    @Option(help: "Top-p (nucleus) sampling.") var topP: Float = 1
    @Option(help: "Top-k sampling (0: off).") var topK = 0
    @Option(help: "Random seed.") var seed: UInt64?
    @Option(help: "Report this many top log-probabilities per token.") var logprobs: Int?
    @Flag(help: "Keep generating after the end-of-sequence token.") var ignoreEos = false
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: KVCacheDtypeArgument.help) var kvCacheDtype = KVCacheDtypeArgument.auto
    @Flag(help: "Print one JSON object: prompt_ids, output_ids, output_text, steps.") var json = false

    func run() throws {
        do {
            try generate()
        } catch let e as LoadError {
            throw CLIError("pagoda generate: \(e)")
        } catch let e as RequestError {
            throw CLIError("pagoda generate: \(e)")
        }
    }

    func generate() throws {
        if !json { writeStderr("loading \(model)\n") }
        let loaded = try ModelLoader.load(path: model)
        let tok = loaded.tokenizer
        var text = prompt
        if chat {
            guard let template = loaded.chatTemplate else { throw CLIError("pagoda generate: \(model) has no chat template") }
            text = try template.render(messages: [.object(JinjaObject([("role", "user"), ("content", .string(prompt))]))],
                                       addGenerationPrompt: true, bosToken: loaded.bosToken, eosToken: loaded.eosToken)
        }
        // A chat rendering already holds its special tokens; a plain prompt gets the model's BOS if it wants one.
        let ids = tok.encode(text, addSpecialTokens: !chat && tok.addBOS, parseSpecial: true)
        var params = SamplingParams()
        params.temperature = temperature
        params.topP = topP
        params.topK = topK
        params.seed = seed
        params.maxTokens = maxTokens
        params.ignoreEOS = ignoreEos
        params.skipSpecialTokens = !json
        params.logprobs = logprobs ?? (json ? 5 : nil)
        var config = EngineConfig()
        config.threads = threads
        config.kvCacheDtype = kvCacheDtype.dtype
        config.numKVBlocks = (ids.count + maxTokens + 15) / 16 + 1
        config.maxModelLen = ids.count + maxTokens
        let core = try EngineCore(loaded: loaded, config: config)
        try core.add(EngineRequest(id: "generate", promptTokenIds: ids, params: params))
        var outIds: [Int] = []
        var outText = ""
        var steps: [[String: Any]] = []
        while core.hasWork {
            for o in core.step() {
                outIds += o.newTokenIds
                outText += o.textDelta
                for lp in o.logprobs {
                    steps.append(["id": lp.token, "logprob": Double(lp.logprob),
                                  "top": lp.top.map { [$0.0, Double($0.1)] as [Any] }])
                }
                if !json { writeStdout(o.textDelta) }
            }
        }
        if json {
            // With --json the text keeps special tokens, as the golden references print them.
            writeStdout(try jsonString(["prompt_ids": ids, "output_ids": outIds, "output_text": tok.decode(outIds), "steps": steps]) + "\n")
        } else {
            writeStdout("\n")
        }
    }
}
