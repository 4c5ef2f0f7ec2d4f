import Foundation

/// Prometheus's text exposition format (version 0.0.4), written by hand: every family with its HELP
/// and TYPE lines, then its samples; label values escaped; histograms as cumulative `_bucket` lines
/// ending in `le="+Inf"`, then `_sum` and `_count`. `promtool check metrics` accepts the output
/// (a test runs it).
public struct PrometheusText: Sendable {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public enum Kind: String, Sendable { case counter, gauge, histogram }

    public private(set) var text = ""

    public init() { text.reserveCapacity(16 * 1024) }

    public mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    public mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String> = [:], _ value: Int64) {
        line(name, labels.map { ($0.key, $0.value) }, String(value))
    }

    public mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String> = [:], _ value: Double) {
        line(name, labels.map { ($0.key, $0.value) }, Self.format(value))
    }

    /// A whole family of one value each, for a gauge or counter without labels.
    public mutating func single(_ name: String, _ kind: Kind, _ help: String, _ value: Int64) {
        family(name, kind, help)
        sample(name, [:], value)
    }

    /// A histogram from per-bucket (not cumulative) counts; `counts` has one more entry than
    /// `bounds`, the observations past the last bound.
    public mutating func histogram(_ name: String, _ help: String, bounds: [Double], counts: ArraySlice<Int64>, sum: Double) {
        family(name, .histogram, help)
        var cumulative: Int64 = 0
        for (bound, count) in zip(bounds, counts) {
            cumulative += count
            line(name + "_bucket", [("le", Self.format(bound))], String(cumulative))
        }
        cumulative += counts.last ?? 0
        line(name + "_bucket", [("le", "+Inf")], String(cumulative))
        line(name + "_sum", [], Self.format(sum))
        line(name + "_count", [], String(cumulative))
    }

    private mutating func line(_ name: String, _ labels: [(String, String)], _ value: String) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (index, (key, labelValue)) in labels.enumerated() {
                if index > 0 { text += "," }
                text += key + "=\"" + Self.escapeLabel(labelValue) + "\""
            }
            text += "}"
        }
        text += " " + value + "\n"
    }

    /// Go's float syntax, which Prometheus parses: integers without a fraction, `+Inf`, `NaN`.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    static func escapeLabel(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeHelp(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}
