// Package eventsv1 holds the protobuf messages exchanged by Orderly's services
// (generated from events.proto) and, in this file, where each one is published:
// its exchange, its routing key and its AMQP type.
//
// The routing key of an event is its name in dotted lower case
// ("order.placed", "stock.reserved", "order.status_changed"); the AMQP `type`
// property is the message's full protobuf name ("orderly.events.v1.OrderPlaced").
package eventsv1

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Exchanges: one durable topic exchange per publishing service.
const (
	ExchangeOrder     = "order.events"
	ExchangeInventory = "inventory.events"
	ExchangePayment   = "payment.events"
)

// ContentType is the AMQP content_type of every message body in this package.
const ContentType = "application/x-protobuf"

// Routing keys of the events and commands on ExchangeOrder.
const (
	RoutingKeyOrderPlaced        = "order.placed"
	RoutingKeyPaymentRequested   = "payment.requested"
	RoutingKeyCommitReservation  = "reservation.commit"
	RoutingKeyReleaseReservation = "reservation.release"
	RoutingKeyRefundRequested    = "refund.requested"
	RoutingKeyOrderStatusChanged = "order.status_changed"
	RoutingKeyOrderCancelled     = "order.cancelled"
)

// Routing keys of the events on ExchangeInventory.
const (
	RoutingKeyStockReserved        = "stock.reserved"
	RoutingKeyStockRejected        = "stock.rejected"
	RoutingKeyReservationCommitted = "reservation.committed"
	RoutingKeyReservationReleased  = "reservation.released"
	RoutingKeyProductUpserted      = "product.upserted"
)

// Routing keys of the events on ExchangePayment.
const (
	RoutingKeyPaymentAuthorized = "payment.authorized"
	RoutingKeyPaymentDeclined   = "payment.declined"
	RoutingKeyPaymentRefunded   = "payment.refunded"
)

// Type names: the full protobuf name of each message, sent as the AMQP `type`
// property so that a consumer knows what to unmarshal before looking inside.
const (
	TypeOrderPlaced          = "orderly.events.v1.OrderPlaced"
	TypePaymentRequested     = "orderly.events.v1.PaymentRequested"
	TypeCommitReservation    = "orderly.events.v1.CommitReservation"
	TypeReleaseReservation   = "orderly.events.v1.ReleaseReservation"
	TypeRefundRequested      = "orderly.events.v1.RefundRequested"
	TypeOrderStatusChanged   = "orderly.events.v1.OrderStatusChanged"
	TypeOrderCancelled       = "orderly.events.v1.OrderCancelled"
	TypeStockReserved        = "orderly.events.v1.StockReserved"
	TypeStockRejected        = "orderly.events.v1.StockRejected"
	TypeReservationCommitted = "orderly.events.v1.ReservationCommitted"
	TypeReservationReleased  = "orderly.events.v1.ReservationReleased"
	TypeProductUpserted      = "orderly.events.v1.ProductUpserted"
	TypePaymentAuthorized    = "orderly.events.v1.PaymentAuthorized"
	TypePaymentDeclined      = "orderly.events.v1.PaymentDeclined"
	TypePaymentRefunded      = "orderly.events.v1.PaymentRefunded"
)

// Route says where a message is published and how it is labeled.
type Route struct {
	Exchange   string
	RoutingKey string
	Type       string
}

// routes lists every message of this package that travels on its own.
var routes = []Route{
	{ExchangeOrder, RoutingKeyOrderPlaced, TypeOrderPlaced},
	{ExchangeOrder, RoutingKeyPaymentRequested, TypePaymentRequested},
	{ExchangeOrder, RoutingKeyCommitReservation, TypeCommitReservation},
	{ExchangeOrder, RoutingKeyReleaseReservation, TypeReleaseReservation},
	{ExchangeOrder, RoutingKeyRefundRequested, TypeRefundRequested},
	{ExchangeOrder, RoutingKeyOrderStatusChanged, TypeOrderStatusChanged},
	{ExchangeOrder, RoutingKeyOrderCancelled, TypeOrderCancelled},
	{ExchangeInventory, RoutingKeyStockReserved, TypeStockReserved},
	{ExchangeInventory, RoutingKeyStockRejected, TypeStockRejected},
	{ExchangeInventory, RoutingKeyReservationCommitted, TypeReservationCommitted},
	{ExchangeInventory, RoutingKeyReservationReleased, TypeReservationReleased},
	{ExchangeInventory, RoutingKeyProductUpserted, TypeProductUpserted},
	{ExchangePayment, RoutingKeyPaymentAuthorized, TypePaymentAuthorized},
	{ExchangePayment, RoutingKeyPaymentDeclined, TypePaymentDeclined},
	{ExchangePayment, RoutingKeyPaymentRefunded, TypePaymentRefunded},
}

// Routes returns every published message's route, in a stable order. The
// slice is a copy; changing it changes nothing here.
func Routes() []Route {
	return append([]Route(nil), routes...)
}

// RouteOf returns the route of msg. It returns false when msg is nil or not a
// published message of this package (for example a LineItem).
func RouteOf(msg proto.Message) (Route, bool) {
	if msg == nil {
		return Route{}, false
	}
	return RouteByType(string(msg.ProtoReflect().Descriptor().FullName()))
}

// RouteByType returns the route of the message whose full protobuf name is
// typ (an AMQP `type` property). It returns false for an unknown type.
func RouteByType(typ string) (Route, bool) {
	for _, r := range routes {
		if r.Type == typ {
			return r, true
		}
	}
	return Route{}, false
}

// Unmarshal decodes body as the message named by typ (an AMQP `type`
// property). It returns an error when typ is not a published message of this
// package or when body is not a valid encoding of it; both are permanent
// failures, so a consumer should dead-letter rather than retry.
func Unmarshal(typ string, body []byte) (proto.Message, error) {
	if _, ok := RouteByType(typ); !ok {
		return nil, fmt.Errorf("eventsv1: unknown message type %q", typ)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(typ))
	if err != nil {
		return nil, fmt.Errorf("eventsv1: find message type %q: %w", typ, err)
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(body, msg); err != nil {
		return nil, fmt.Errorf("eventsv1: unmarshal %s: %w", typ, err)
	}
	if field, at := controlChar(msg.ProtoReflect()); field != "" {
		return nil, fmt.Errorf("eventsv1: unmarshal %s: %s contains a control character (U+%04X)", typ, field, at)
	}
	return msg, nil
}

// controlChar returns the name of the first string field of m, nested
// messages and lists included, that holds a C0 control character or DEL,
// with that character, or "". Every string of these messages is an
// identifier, a code or a name: a control character in one can only come
// from a corrupt or forged message, and consumers would pass it on to
// PostgreSQL, which refuses a NUL with an error that looks transient (the
// message would be retried for a minute before it is dead-lettered) and
// stores the others, for logs and shoppers' pages. proto.Unmarshal has
// already refused invalid UTF-8 (these are proto3 strings).
func controlChar(m protoreflect.Message) (field string, char byte) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var values []protoreflect.Value
		if fd.IsList() {
			for i := range v.List().Len() {
				values = append(values, v.List().Get(i))
			}
		} else {
			values = []protoreflect.Value{v}
		}
		for _, v := range values {
			switch fd.Kind() {
			case protoreflect.StringKind:
				if i := strings.IndexFunc(v.String(), isControl); i >= 0 {
					field, char = string(fd.Name()), v.String()[i]
				}
			case protoreflect.MessageKind:
				if f, c := controlChar(v.Message()); f != "" {
					field, char = string(fd.Name())+"."+f, c
				}
			}
			if field != "" {
				return false
			}
		}
		return true
	})
	return field, char
}

// isControl reports whether r is a C0 control character or DEL, the
// characters httpx.CheckText refuses in clients' text.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Label returns the status as the HTTP and WebSocket APIs spell it
// ("pending", "cancelled", …), or "" for ORDER_STATUS_UNSPECIFIED and unknown
// values.
func (s OrderStatus) Label() string {
	return label(s.String(), "ORDER_STATUS_", s == OrderStatus_ORDER_STATUS_UNSPECIFIED)
}

// ParseOrderStatus returns the status whose Label is label. It returns an
// error for "" and for unknown labels.
func ParseOrderStatus(label string) (OrderStatus, error) {
	v, ok := OrderStatus_value["ORDER_STATUS_"+strings.ToUpper(label)]
	if !ok || v == 0 || strings.ToLower(label) != label {
		return OrderStatus_ORDER_STATUS_UNSPECIFIED, fmt.Errorf("eventsv1: unknown order status %q", label)
	}
	return OrderStatus(v), nil
}

// Label returns the reason as the HTTP and WebSocket APIs spell it
// ("out_of_stock", "timeout", …), or "" for CANCEL_REASON_UNSPECIFIED and
// unknown values.
func (r CancelReason) Label() string {
	return label(r.String(), "CANCEL_REASON_", r == CancelReason_CANCEL_REASON_UNSPECIFIED)
}

// ParseCancelReason returns the reason whose Label is label; "" gives
// CANCEL_REASON_UNSPECIFIED (no reason). It returns an error for unknown
// labels.
func ParseCancelReason(label string) (CancelReason, error) {
	if label == "" {
		return CancelReason_CANCEL_REASON_UNSPECIFIED, nil
	}
	v, ok := CancelReason_value["CANCEL_REASON_"+strings.ToUpper(label)]
	if !ok || v == 0 || strings.ToLower(label) != label {
		return CancelReason_CANCEL_REASON_UNSPECIFIED, fmt.Errorf("eventsv1: unknown cancel reason %q", label)
	}
	return CancelReason(v), nil
}

// label turns an enum value name such as "ORDER_STATUS_PENDING" into
// "pending". Unknown values print as numbers and have no prefix, so they give "".
func label(name, prefix string, unspecified bool) string {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || unspecified {
		return ""
	}
	return strings.ToLower(rest)
}
