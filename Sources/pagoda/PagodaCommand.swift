import ArgumentParser
import Pagoda

@main
struct PagodaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pagoda", abstract: "Pagoda: an LLM inference engine in Swift.")
}
