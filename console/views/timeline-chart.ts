import type { StepSummary } from '../../protocol/fleet-api.js';
import { svg } from '../dom.js';
import { duration } from '../format.js';

const ROW_HEIGHT = 22;
const LABEL_WIDTH = 70;
const CHART_WIDTH = 600;

/**
 * The steps' durations as horizontal bars on one time axis, drawn by the page as SVG: a step with
 * started_at starts where it started; one without is placed after the previous step.
 */
export function timelineChart(steps: StepSummary[]): SVGSVGElement {
  const spans = placeSteps(steps);
  const start = Math.min(...spans.map((span) => span.from));
  const end = Math.max(...spans.map((span) => span.to), start + 0.001);
  const scale = (CHART_WIDTH - LABEL_WIDTH - 10) / (end - start);
  const height = spans.length * ROW_HEIGHT + 24;
  const chart = svg('svg', {
    viewBox: `0 0 ${CHART_WIDTH} ${height}`,
    class: 'timeline',
    role: 'img',
    'aria-label': `Timeline of ${steps.length} steps over ${duration((end - start) * 1000)}`,
  });
  spans.forEach((span, row) => {
    const y = row * ROW_HEIGHT + 4;
    const x = LABEL_WIDTH + (span.from - start) * scale;
    const width = Math.max((span.to - span.from) * scale, 2);
    chart.append(
      svg('text', { x: 0, y: y + 14, class: 'timeline-label' }, `step ${span.step.step}`),
      svg('rect', { x, y, width, height: ROW_HEIGHT - 8, rx: 2, class: `timeline-bar status-${span.step.status}` }, svg('title', {}, `step ${span.step.step}: ${duration(span.step.duration_ms)}`)),
    );
  });
  chart.append(
    svg('line', { x1: LABEL_WIDTH, x2: CHART_WIDTH - 10, y1: height - 18, y2: height - 18, class: 'timeline-axis' }),
    svg('text', { x: LABEL_WIDTH, y: height - 4, class: 'timeline-label' }, '0'),
    svg('text', { x: CHART_WIDTH - 10, y: height - 4, 'text-anchor': 'end', class: 'timeline-label' }, duration((end - start) * 1000)),
  );
  return chart;
}

/** Each step's span in Unix seconds. */
function placeSteps(steps: StepSummary[]): { step: StepSummary; from: number; to: number }[] {
  let previousEnd: number | undefined;
  return steps.map((step) => {
    const seconds = (step.duration_ms ?? 0) / 1000;
    const from = step.started_at ?? previousEnd ?? step.timestamp - seconds;
    const to = from + seconds;
    previousEnd = to;
    return { step, from, to };
  });
}
