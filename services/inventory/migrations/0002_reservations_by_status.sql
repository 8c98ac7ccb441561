-- Lets GET /api/inventory/reservations?status=…&createdBefore=… (the order service's reservation
-- reconciler) walk one status in (created_at, order_number) order without scanning the table.
CREATE INDEX reservations_status_created ON reservations (status, created_at, order_number);
