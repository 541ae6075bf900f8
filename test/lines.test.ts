import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Schema from "effect/Schema"
import { LineBuffer, maxLine } from "../src/internal/command/lines.ts"

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

/** Feeds `chunks` and returns every line produced, including those from end(). */
const feed = (buffer: LineBuffer, chunks: ReadonlyArray<Uint8Array | string>): Array<string> => {
  const lines: Array<string> = []
  for (const chunk of chunks) lines.push(...buffer.push(chunk))
  lines.push(...buffer.end())
  return lines
}

/** Cuts `data` at the given offsets (sorted, deduplicated, clamped). */
const cut = (data: Uint8Array, offsets: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(offsets.map((o) => Math.min(data.length, Math.max(0, o))))].sort((a, b) => a - b)
  const chunks: Array<Uint8Array> = []
  let start = 0
  for (const p of points) {
    chunks.push(data.subarray(start, p))
    start = p
  }
  chunks.push(data.subarray(start))
  return chunks
}

/** What a reader of the whole text would call its lines. */
const expectedLines = (text: string): Array<string> => {
  if (text === "") return []
  const parts = text.split("\n")
  if (parts[parts.length - 1] === "") parts.pop()
  return parts.map((l) => l.endsWith("\r") ? l.slice(0, -1) : l)
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

const textArb = Arbitrary.array(
  Arbitrary.schema(
    Schema.Union([Schema.Literals(["\n", "\r\n", "\r", "é", "👍", "中", "e\u0301", "a"]), Schema.String])
  ),
  { maxLength: 40 }
).pipe(Arbitrary.map((parts) => parts.join("").replace(loneSurrogate, "\uFFFD")))

/** CPU time (user + system) of this process so far, in milliseconds. */
const cpuMillis = (): number => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

/** `size` bytes of `x`, with a newline every `lineLength` bytes (and always at the end). */
const output = (size: number, lineLength: number, fill = "x"): Uint8Array => {
  const data = new Uint8Array(size).fill(fill.charCodeAt(0))
  for (let i = lineLength - 1; i < size; i += lineLength) data[i] = 10
  data[size - 1] = 10
  return data
}

const chunked = (data: Uint8Array, size: number): Array<Uint8Array> => {
  const chunks: Array<Uint8Array> = []
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size))
  return chunks
}

/**
 * Feeds `chunks`, giving up as soon as it has used more than `budget` ms of CPU (so that a
 * quadratic buffer fails in seconds rather than minutes); returns the CPU time used, the lines
 * and whether every chunk went in.
 */
const timedFeed = (buffer: LineBuffer, chunks: ReadonlyArray<Uint8Array>, budget = Infinity) => {
  const start = cpuMillis()
  const lines: Array<string> = []
  let fed = 0
  for (const chunk of chunks) {
    for (const line of buffer.push(chunk)) lines.push(line)
    fed++
    if ((fed & 63) === 0 && cpuMillis() - start > budget) break
  }
  if (fed === chunks.length) { for (const line of buffer.end()) lines.push(line) }
  return { millis: cpuMillis() - start, lines, complete: fed === chunks.length }
}

/**
 * The CPU cost of `long` must stay within 5 times that of `short` (the same bytes in 80-byte
 * lines), plus 250 ms of slack for a loaded machine. Each is measured best of three; a
 * quadratic buffer misses the bound by orders of magnitude.
 */
const assertLinear = (
  keep: boolean,
  short: ReadonlyArray<Uint8Array>,
  long: ReadonlyArray<Uint8Array>,
  check: (lines: ReadonlyArray<string>, buffer: LineBuffer) => void
) => {
  let baseline = Infinity
  for (let i = 0; i < 3; i++) baseline = Math.min(baseline, timedFeed(new LineBuffer(keep), short).millis)
  const budget = 5 * baseline + 250
  let best = Infinity
  for (let i = 0; i < 3 && best > budget; i++) {
    const buffer = new LineBuffer(keep)
    const run = timedFeed(buffer, long, budget)
    assert.isTrue(
      run.complete,
      `gave up after ${run.millis.toFixed(0)} ms of CPU; the same bytes in short lines took ${
        baseline.toFixed(0)
      } ms`
    )
    check(run.lines, buffer)
    best = Math.min(best, run.millis)
  }
  assert.isAtMost(best, budget, `short lines: ${baseline.toFixed(0)} ms of CPU`)
}

describe("LineBuffer", () => {
  it("returns lines as they complete, holding back a partial one", () => {
    const b = new LineBuffer()
    assert.deepStrictEqual(b.push("hel"), [])
    assert.deepStrictEqual(b.push("lo\nwor"), ["hello"])
    assert.deepStrictEqual(b.push("ld\n\nx"), ["world", ""])
    assert.deepStrictEqual(b.end(), ["x"])
    assert.strictEqual(b.text(), "hello\nworld\n\nx")
  })

  it("a byte order mark at the start is output like any other character, not dropped", () => {
    const b = new LineBuffer()
    const bytes = new TextEncoder().encode("\uFEFFfirst\nsecond\n")
    assert.deepStrictEqual(b.push(bytes.subarray(0, 2)), [])
    assert.deepStrictEqual(b.push(bytes.subarray(2)), ["\uFEFFfirst", "second"])
    assert.strictEqual(b.text(), "\uFEFFfirst\nsecond\n")
  })

  it("a line split in the middle across byte chunks is joined", () => {
    const b = new LineBuffer()
    assert.deepStrictEqual(b.push(bytes("first li")), [])
    assert.deepStrictEqual(b.push(bytes("ne\nsecond")), ["first line"])
    assert.deepStrictEqual(b.push(bytes(" line\n")), ["second line"])
    assert.deepStrictEqual(b.end(), [])
  })

  it("a multi-byte character split across chunks is decoded once, correctly", () => {
    // "é" is C3 A9, "👍" is F0 9F 91 8D
    const data = bytes("café 👍\n")
    const b = new LineBuffer()
    const out: Array<string> = []
    for (let i = 0; i < data.length; i++) out.push(...b.push(data.subarray(i, i + 1)))
    out.push(...b.end())
    assert.deepStrictEqual(out, ["café 👍"])
    assert.strictEqual(b.text(), "café 👍\n")
    assert.notInclude(b.text(), "\uFFFD")
  })

  it("a character cut before the newline of its line still completes that line", () => {
    const data = bytes("ab👍\ncd")
    const b = new LineBuffer()
    assert.deepStrictEqual(b.push(data.subarray(0, 4)), [])
    assert.deepStrictEqual(b.push(data.subarray(4, 7)), ["ab👍"])
    assert.deepStrictEqual(b.push(data.subarray(7)), [])
    assert.deepStrictEqual(b.end(), ["cd"])
  })

  it("strips the \\r of \\r\\n line ends (a pty), even when \\r and \\n arrive apart", () => {
    const b = new LineBuffer()
    assert.deepStrictEqual(b.push("one\r\ntwo\r"), ["one"])
    assert.deepStrictEqual(b.push("\nthree\r\n"), ["two", "three"])
    assert.deepStrictEqual(b.end(), [])
    assert.strictEqual(b.text(), "one\r\ntwo\r\nthree\r\n")
  })

  it("keeps a \\r that is not a line end", () => {
    const b = new LineBuffer()
    assert.deepStrictEqual(feed(b, ["progress 10%\rprogress 20%\rdone\n"]), [
      "progress 10%\rprogress 20%\rdone"
    ])
  })

  it("end() flushes the trailing partial line, strips its \\r, and is empty after", () => {
    const b = new LineBuffer()
    b.push("a\nlast\r")
    assert.deepStrictEqual(b.end(), ["last"])
    assert.deepStrictEqual(b.end(), [])
    assert.deepStrictEqual(new LineBuffer().end(), [])
  })

  it("end() decodes an incomplete character at the end as U+FFFD rather than losing it", () => {
    const b = new LineBuffer()
    assert.deepStrictEqual(b.push(bytes("ok 👍").subarray(0, 5)), [])
    assert.deepStrictEqual(b.end(), ["ok \uFFFD"])
    assert.strictEqual(b.text(), "ok \uFFFD")
  })

  it("keep=false still cuts lines but keeps no text", () => {
    const b = new LineBuffer(false)
    assert.deepStrictEqual(feed(b, [bytes("a\nb"), "c\n", bytes("tail")]), ["a", "bc", "tail"])
    assert.strictEqual(b.text(), "")
  })

  it("text() is exactly what was pushed, strings and bytes mixed", () => {
    const b = new LineBuffer()
    const data = bytes("😀 two\r\n")
    b.push("one\n")
    b.push(data.subarray(0, 2))
    b.push(data.subarray(2))
    b.push("")
    b.push(new Uint8Array(0))
    b.push("no newline")
    b.end()
    assert.strictEqual(b.text(), "one\n😀 two\r\nno newline")
  })

  it("a line longer than maxLine comes out in pieces as it arrives; its end adds no line of its own", () => {
    const b = new LineBuffer(false)
    const chunk = "x".repeat(64 << 10)
    const out: Array<string> = []
    for (let i = 0; i < 40; i++) out.push(...b.push(chunk))
    // pieces come before the line ends: 2.5 MiB so far, at least 2 pieces of maxLine or more
    assert.isAtLeast(out.length, 2)
    assert.isTrue(out.every((piece) => piece.length >= maxLine && piece.length <= maxLine + chunk.length))
    out.push(...b.push("y\r"), ...b.push("\nnext\n"))
    out.push(...b.end())
    assert.strictEqual(out.at(-1), "next")
    assert.strictEqual(out.slice(0, -1).join(""), chunk.repeat(40) + "y")
  })

  it("a piece never ends in the \\r of a \\r\\n line end", () => {
    const b = new LineBuffer()
    const first = b.push("x".repeat(maxLine - 1) + "\r")
    assert.deepStrictEqual(first.map((l) => l.length), [maxLine - 1])
    assert.deepStrictEqual(b.push("\nnext"), [])
    assert.deepStrictEqual(b.end(), ["next"])
    assert.strictEqual(b.text(), "x".repeat(maxLine - 1) + "\r\nnext")
  })

  for (const keep of [true, false]) {
    const mode = keep ? "" : " (discardOutput)"

    it(`one 20 MB line costs about what the same bytes in short lines cost${mode}`, () => {
      const size = 20 << 20
      assertLinear(
        keep,
        chunked(output(size, 80), 16 << 10),
        chunked(output(size, size), 16 << 10),
        (lines, buffer) => {
          // given out in pieces of at most maxLine + one chunk: the buffer held no more than that
          assert.isTrue(lines.every((line) => line.length <= maxLine + (16 << 10)))
          assert.strictEqual(lines.join("").length, size - 1)
          assert.strictEqual(buffer.text().length, keep ? size : 0)
        }
      )
    }, 60_000)

    it(`a 3 MB progress bar of \\r without a newline, written 40 bytes at a time, is linear${mode}`, () => {
      const size = 3 << 20
      const bar = new TextEncoder().encode(" 42% [=================>           ] 1.2MB\r")
      const data = new Uint8Array(size)
      for (let i = 0; i < size; i += bar.length) data.set(bar.subarray(0, Math.min(bar.length, size - i)), i)
      assertLinear(
        keep,
        chunked(output(size, 80), 40),
        chunked(data, 40),
        (lines, buffer) => {
          assert.isTrue(lines.every((line) => line.length <= maxLine + 40))
          assert.strictEqual(lines.join("").length, data.at(-1) === 13 ? size - 1 : size)
          assert.strictEqual(buffer.text().length, keep ? size : 0)
        }
      )
    }, 60_000)
  }

  it.prop(
    "any text cut into any byte chunks gives the same lines and text as the whole",
    [textArb, Schema.Array(Schema.Int)],
    ([text, offsets]) => {
      const data = bytes(text)
      const b = new LineBuffer()
      const lines = feed(b, cut(data, offsets.map((o) => Math.abs(o) % (data.length + 1))))
      assert.deepStrictEqual(lines, expectedLines(text))
      assert.strictEqual(b.text(), text)
    },
    { arbitrary: { runs: 1000, size: 40 } }
  )
})
