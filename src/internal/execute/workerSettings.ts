/**
 * Settings on their way to a worker process: durations as milliseconds, `Redacted` values
 * revealed only inside the IPC message and wrapped again on arrival.
 *
 * The codec walks the settings object instead of listing its keys, so a setting added later
 * crosses without a change here as long as it is JSON, a `Duration` or a `Redacted` string.
 */
import * as Duration from "effect/Duration"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type { Settings } from "../../Settings.ts"
import { isNotADuration, notADuration } from "../settings/duration.ts"

/**
 * One setting on the wire. `millis: null` stands for an infinite duration (JSON has no Infinity).
 * A number JSON cannot hold (`NaN`, `±Infinity`, say a port computed from a missing variable)
 * crosses as its name, so the worker rejects it with the same `SettingsError` as this process.
 */
export const WireValue = Schema.Union([
  Schema.TaggedStruct("Duration", { millis: Schema.NullOr(Schema.Number) }),
  // A duration input that was no duration (see `Settings.apply`): refused in the worker as here.
  Schema.TaggedStruct("NotADuration", {}),
  Schema.TaggedStruct("NonFinite", { value: Schema.Literals(["NaN", "Infinity", "-Infinity"]) }),
  Schema.TaggedStruct("Redacted", { value: Schema.String }),
  Schema.TaggedStruct("Plain", { value: Schema.Json })
])

/** Every setting on the wire, by key. */
export const SettingsWire = Schema.Record(Schema.String, WireValue)

/** The wire type of {@link SettingsWire}. */
export type SettingsWire = typeof SettingsWire.Type

const encodeValue = (value: unknown): typeof WireValue.Type => {
  if (Duration.isDuration(value)) {
    if (isNotADuration(value)) return { _tag: "NotADuration" }
    const millis = Duration.toMillis(value)
    return { _tag: "Duration", millis: Number.isFinite(millis) ? millis : null }
  }
  if (Redacted.isRedacted(value)) return { _tag: "Redacted", value: String(Redacted.value(value)) }
  if (typeof value === "number" && !Number.isFinite(value)) {
    return { _tag: "NonFinite", value: String(value) as "NaN" | "Infinity" | "-Infinity" }
  }
  return { _tag: "Plain", value: value === undefined ? null : (value as Schema.Json) }
}

const decodeValue = (wire: typeof WireValue.Type): unknown => {
  switch (wire._tag) {
    case "Duration":
      return wire.millis === null ? Duration.infinity : Duration.millis(wire.millis)
    case "NotADuration":
      return notADuration
    case "Redacted":
      return Redacted.make(wire.value)
    case "NonFinite":
      return Number(wire.value)
    case "Plain":
      // `undefined` settings travel as null; every optional setting means "none" by undefined.
      return wire.value === null ? undefined : wire.value
  }
}

/** Settings to their wire form. Only call it to build the message for a worker: it reveals secrets. */
export const encode = (settings: Settings): SettingsWire => {
  const wire: Record<string, typeof WireValue.Type> = {}
  for (const [key, value] of Object.entries(settings)) wire[key] = encodeValue(value)
  return wire
}

/** Settings from their wire form, secrets wrapped again in `Redacted`. */
export const decode = (wire: SettingsWire): Settings => {
  const settings: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(wire)) settings[key] = decodeValue(value)
  return settings as unknown as Settings
}
