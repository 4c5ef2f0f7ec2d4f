// libFuzzer target for HTTP1Parser (`make fuzz`; a bounded run is part of `make test`). Compiled
// together with Sources/AppServerHTTP/HTTP1/HTTP1Parser.swift, ByteWords.swift and WatchedFieldNames.swift alone,
// with -sanitize=fuzzer,address.
//
// Beyond "no crash": the same bytes must parse to the same events whether they arrive whole, byte
// by byte or in two pieces; every range stays inside the bytes; a Content-Length body is exactly that
// long; the parser always consumes or asks for more (no loop without progress); every field with one of
// the watched names (the edge's defaults) is noted as watched.

struct Outcome: Equatable {
    var events: [String] = []
    var body: [UInt8] = []
}

let watchedNames = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-protocol", "x-forwarded-ssl", "x-request-id"].map { Array($0.utf8) }

func run(_ input: UnsafeRawBufferPointer, pieces: (Int) -> Int) -> Outcome {
    var limits = HTTP1ParserLimits()
    limits.watchedNames = WatchedFieldNames(watchedNames)
    var parser = HTTP1Parser(limits: limits)
    var pending: [UInt8] = []
    var offered = 0
    var outcome = Outcome()
    var expectedBody: Int64?
    var bodyLength: Int64 = 0
    var stalls = 0
    while true {
        let (event, consumed) = pending.withUnsafeBytes { parser.next($0) }
        precondition(consumed >= 0 && consumed <= pending.count, "consumed \(consumed) of \(pending.count)")
        switch event {
        case .needMore:
            pending.removeFirst(consumed)
            if offered == input.count { return outcome }
            let n = min(max(1, pieces(offered)), input.count - offered)
            pending += input[offered..<(offered + n)]
            offered += n
            stalls = 0
            continue
        case .head(let head):
            precondition(head.length == consumed && head.method.upperBound <= consumed && head.target.upperBound <= consumed)
            for (index, field) in head.fields.enumerated() {
                precondition(field.nameStart < field.nameEnd && field.nameEnd < field.valueStart + 1 && field.valueStart <= field.valueEnd && Int(field.valueEnd) <= consumed)
                let name = pending[field.name].map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
                if watchedNames.contains(name) {
                    precondition(head.watchedFields & 1 << UInt64(min(index, 63)) != 0, "a watched field not noted")
                }
            }
            outcome.events.append("head \(head.method) \(head.target) \(head.minorVersion) \(head.fields.count) \(String(describing: head.contentLength)) \(head.chunked) \(head.keepAlive) \(head.watchedFields)")
            expectedBody = head.chunked ? nil : (head.contentLength ?? 0)
            bodyLength = 0
        case .body(let range):
            precondition(range.lowerBound >= 0 && range.upperBound <= consumed && !range.isEmpty)
            outcome.body += pending[range]
            bodyLength += Int64(range.count)
        case .end:
            if let expectedBody { precondition(bodyLength == expectedBody, "body \(bodyLength) != Content-Length \(expectedBody)") }
            outcome.events.append("end")
        case .error(let error):
            precondition((400...505).contains(error.status))
            outcome.events.append("error \(error.status)")
            return outcome
        }
        if consumed == 0 {
            stalls += 1
            precondition(stalls < 4, "no progress")
        } else {
            stalls = 0
        }
        pending.removeFirst(consumed)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let whole = run(input) { _ in Int.max }
    let split = size > 0 ? Int(input[0]) % max(1, size) + 1 : 1
    let twoPieces = run(input) { offset in offset == 0 ? split : Int.max }
    precondition(whole == twoPieces, "whole and split at \(split) differ: \(whole.events) vs \(twoPieces.events)")
    if size <= 2048 {
        let bytewise = run(input) { _ in 1 }
        precondition(whole == bytewise, "whole and byte by byte differ: \(whole.events) vs \(bytewise.events)")
    }
    return 0
}
