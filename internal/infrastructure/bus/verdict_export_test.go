package bus

// AnswerVerdict is answerVerdict for the external tests.
var AnswerVerdict = answerVerdict
