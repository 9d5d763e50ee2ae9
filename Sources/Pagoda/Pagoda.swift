/// Pagoda: an LLM inference and serving engine.
public enum PagodaInfo {
    public static let version = "0.1.0"
}
