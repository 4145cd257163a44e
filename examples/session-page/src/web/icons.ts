// Inline SVG icons (no image requests, no inline styles), each an accessible image.

import type { DeviceKind } from "../shared/api.js";

const SVG = "http://www.w3.org/2000/svg";

// 24x24 outlines, drawn with the text colour.
const PATHS: Record<DeviceKind | "warning", readonly string[]> = {
  desktop: ["M3 4h18v12H3z", "M8 20h8", "M12 16v4"],
  mobile: ["M7 2h10v20H7z", "M11 18h2"],
  tablet: ["M2 5h20v14H2z", "M18 12v.5"],
  unknown: ["M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z", "M9.5 9a2.5 2.5 0 1 1 3.5 2.3c-.6.3-1 .9-1 1.6V14", "M12 17.5v.5"],
  warning: ["M12 3 2 21h20z", "M12 10v5", "M12 18v.5"],
};

export const DEVICE_LABELS: Record<DeviceKind, string> = {
  desktop: "Desktop",
  mobile: "Mobile phone",
  tablet: "Tablet",
  unknown: "Unknown device",
};

/** An <svg role="img"> with `label` as its accessible name. */
export function icon(kind: DeviceKind | "warning", label: string): SVGSVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("class", `icon icon-${kind}`);
  for (const d of PATHS[kind]) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}
