/**
 * Cuts a byte stream into whole lines as it arrives, so that output can be printed line by line
 * while a command runs, and keeps the exact text for the command's result. Multi-byte
 * characters split across chunks are decoded correctly.
 *
 * The work is linear in the output, however it is cut into lines: each chunk is searched once,
 * and the unfinished line is kept as a list of its chunks, joined once when it ends. (Appending
 * to one string and searching all of it again on every chunk made a 50 MB line, or a long
 * progress bar of `\r` without a newline, quadratic: minutes of CPU and gigabytes of memory.)
 *
 * A line longer than {@link maxLine} characters is given out in pieces of about that size, as
 * it arrives: lines are only printed, and a command that prints megabytes without a newline (a
 * dump, a progress bar of `\r`) should neither wait until its end to show anything nor hold all
 * of it in memory when its output is not kept (`discardOutput`).
 */

/** The longest line given out whole; a longer one comes in pieces of at least this size. */
export const maxLine = 1 << 20

/** Cuts decoded output into lines, keeping its text unless told not to. */
export class LineBuffer {
  // ignoreBOM: a U+FEFF at the start is part of the output, not a marker to drop.
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true })
  private readonly kept: Array<string> = []
  /** The chunks of the line not ended yet, and their length. */
  private parts: Array<string> = []
  private partsLength = 0
  /** Whether pieces of the unfinished line were given out already. */
  private continued = false
  private readonly keep: boolean

  /** With `keep: false` (`discardOutput`), lines are still cut but no text is kept. */
  constructor(keep = true) {
    this.keep = keep
  }

  /**
   * Adds a chunk and returns the lines it completed (without their terminators), and the
   * unfinished line once it has reached {@link maxLine} characters.
   */
  push(chunk: Uint8Array | string): ReadonlyArray<string> {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true })
    if (text === "") return []
    if (this.keep) this.kept.push(text)
    if (!text.includes("\n")) {
      this.parts.push(text)
      this.partsLength += text.length
      return this.partsLength >= maxLine ? [this.piece()] : []
    }
    const lines = text.split("\n")
    const rest = lines.pop()!
    if (this.parts.length > 0) {
      this.parts.push(lines[0]!)
      lines[0] = this.parts.join("")
    }
    for (let i = 0; i < lines.length; i++) lines[i] = stripCr(lines[i]!)
    // The end of a line given out in pieces is no line of its own.
    if (this.continued && lines[0] === "") lines.shift()
    this.continued = false
    this.parts = rest === "" ? [] : [rest]
    this.partsLength = rest.length
    if (this.partsLength >= maxLine) lines.push(this.piece())
    return lines
  }

  /** Gives out the unfinished line so far, but a last `\r` that may be half of a `\r\n`. */
  private piece(): string {
    const text = this.parts.join("")
    const cut = text.endsWith("\r") ? text.length - 1 : text.length
    this.parts = cut === text.length ? [] : ["\r"]
    this.partsLength = text.length - cut
    this.continued = true
    return text.slice(0, cut)
  }

  /** Returns what is left after the last newline, if anything, once the stream has ended. */
  end(): ReadonlyArray<string> {
    const tail = this.decoder.decode()
    if (this.keep && tail !== "") this.kept.push(tail)
    if (tail !== "") this.parts.push(tail)
    const rest = this.parts.join("")
    const line = stripCr(rest)
    const continued = this.continued
    this.parts = []
    this.partsLength = 0
    this.continued = false
    return rest === "" || (continued && line === "") ? [] : [line]
  }

  /** Everything pushed so far, exactly as decoded (empty when not keeping). */
  text(): string {
    // Joined once: a result and a time-out may each ask for it.
    if (this.kept.length > 1) this.kept.splice(0, this.kept.length, this.kept.join(""))
    return this.kept[0] ?? ""
  }
}

// A pty ends lines with \r\n.
const stripCr = (line: string): string => line.endsWith("\r") ? line.slice(0, -1) : line
