// Schemas for the google.rpc error details authsvc sends (ErrorInfo, RetryInfo).
//
// google/rpc/error_details.proto is not among our protos and buf's BSR is not reachable
// offline, so `buf generate` cannot make these. Instead of hand-decoding wire bytes, we
// describe the two messages here, field for field as in googleapis
// (google/rpc/error_details.proto), and let @bufbuild/protobuf build real message schemas
// from that descriptor. ConnectError.findDetails() then decodes them with the library's own
// binary reader: maps, unknown fields and future additions behave exactly as for
// generated code. Only field numbers and types matter on the wire, and those are frozen
// upstream.

import { create, createFileRegistry, type DescMessage, type Message } from "@bufbuild/protobuf";
import {
  type Duration,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
  file_google_protobuf_duration,
} from "@bufbuild/protobuf/wkt";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";

/** google.rpc.ErrorInfo: why an error happened, as a stable machine-readable reason. */
export type ErrorInfo = Message<"google.rpc.ErrorInfo"> & {
  reason: string;
  domain: string;
  metadata: { [key: string]: string };
};

/** google.rpc.RetryInfo: how long to wait before retrying (sent with RATE_LIMITED). */
export type RetryInfo = Message<"google.rpc.RetryInfo"> & {
  retryDelay?: Duration;
};

const errorDetailsFile = create(FileDescriptorProtoSchema, {
  name: "google/rpc/error_details.proto",
  package: "google.rpc",
  dependency: ["google/protobuf/duration.proto"],
  syntax: "proto3",
  messageType: [
    {
      name: "ErrorInfo",
      field: [
        { name: "reason", number: 1, type: Type.STRING, label: Label.OPTIONAL, jsonName: "reason" },
        { name: "domain", number: 2, type: Type.STRING, label: Label.OPTIONAL, jsonName: "domain" },
        {
          name: "metadata",
          number: 3,
          type: Type.MESSAGE,
          label: Label.REPEATED,
          typeName: ".google.rpc.ErrorInfo.MetadataEntry",
          jsonName: "metadata",
        },
      ],
      nestedType: [
        {
          name: "MetadataEntry",
          field: [
            { name: "key", number: 1, type: Type.STRING, label: Label.OPTIONAL, jsonName: "key" },
            { name: "value", number: 2, type: Type.STRING, label: Label.OPTIONAL, jsonName: "value" },
          ],
          options: { mapEntry: true },
        },
      ],
    },
    {
      name: "RetryInfo",
      field: [
        {
          name: "retry_delay",
          number: 1,
          type: Type.MESSAGE,
          label: Label.OPTIONAL,
          typeName: ".google.protobuf.Duration",
          jsonName: "retryDelay",
        },
      ],
    },
  ],
});

const registry = createFileRegistry(errorDetailsFile, (name) =>
  name === file_google_protobuf_duration.proto.name ? file_google_protobuf_duration : undefined,
);

function messageSchema<T extends Message>(typeName: string): GenMessage<T> {
  const desc: DescMessage | undefined = registry.getMessage(typeName);
  if (desc === undefined) {
    throw new Error(`authsvc client: ${typeName} missing from its own descriptor`);
  }
  // The descriptor above declares exactly the fields of T, so this is the schema of T.
  return desc as GenMessage<T>;
}

/** Schema of google.rpc.ErrorInfo, for ConnectError.findDetails(). */
export const ErrorInfoSchema: GenMessage<ErrorInfo> = messageSchema<ErrorInfo>("google.rpc.ErrorInfo");

/** Schema of google.rpc.RetryInfo, for ConnectError.findDetails(). */
export const RetryInfoSchema: GenMessage<RetryInfo> = messageSchema<RetryInfo>("google.rpc.RetryInfo");
